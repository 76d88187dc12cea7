"""Sustained load: minutes at ~70% of the measured saturation rate.

Measures saturation first (closed loop), then holds a fixed arrival rate at
``--share`` of it, window by window, reporting p99 latency, errors and the
server's resident memory in each window. Uses the models in the BentoML
store; traffic goes to 127.0.0.1 only and stops by itself::

    python -m benchmarks.soak --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from benchmarks.loadgen import fixed_concurrency, fixed_rate, markdown, process_tree_rss_mb, recommend_bodies
from benchmarks.servers import free_port
from benchmarks.serving import BIN, server
from serving.runtime import Runtime
from serving.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--minutes", type=float, default=3)
    cli.add_argument("--window", type=float, default=30, help="seconds per reported window")
    cli.add_argument("--share", type=float, default=0.7, help="share of the saturation rate to hold")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    args = cli.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    runtime = Runtime.from_settings(get_settings())
    bodies = recommend_bodies([str(u) for u in runtime.candidates.user_ids], 20_000, seed=3)
    del runtime

    port = free_port()
    command = [str(BIN / "bentoml"), "serve", "service:Recommender", "--port", str(port), "--host", "127.0.0.1"]
    with server(command, port, {"RECSYS_REFRESH_SECONDS": "0"}, args.out / "soak-bentoml.log") as (url, pid):
        saturation = asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, 32, 15)).summary()
        rate = round(saturation["rps"] * args.share)
        print(f"saturation: {saturation['rps']} req/s at 32 connections; holding {rate} req/s", flush=True)
        rows = []
        windows = max(1, round(args.minutes * 60 / args.window))
        for window in range(windows):
            result = asyncio.run(fixed_rate(f"{url}/recommend", bodies, rate, args.window, f"window {window + 1}"))
            result.rss_mb_end = process_tree_rss_mb(pid)
            rows.append(result.summary())
            print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    first, last = rows[0], rows[-1]
    growth = (last["rss_mb_end"] - first["rss_mb_end"]) / first["rss_mb_end"]
    report = {
        "saturation": saturation,
        "rate": rate,
        "windows": rows,
        "errors": sum(r["errors"] for r in rows),
        "rss_growth": round(growth, 4),
    }
    print()
    print(markdown(rows))
    print(
        f"\n{sum(r['requests'] for r in rows)} requests at {rate} req/s, {report['errors']} errors; "
        f"p99 {first['p99_ms']} ms -> {last['p99_ms']} ms; "
        f"memory {first['rss_mb_end']} MB -> {last['rss_mb_end']} MB ({growth:+.1%})"
    )
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 and growth < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
