"""Topology benchmark: one process against the split stages, in one run, with the cost per hop.

Serves, one after the other on the same models and the same request bodies,

1. ``bentoml serve service:Recommender`` (both stages in one process);
2. ``bentoml serve split_service:Entry`` (entry + candidates + ranker services);
3. optionally the split form with BentoML's client as released
   (``RECSYS_SPLIT_HARDENED=false``), to show what it loses;

and loads each closed-loop at the given connection counts. The cost per hop
is the difference of the median latencies at one connection, divided by the
two hops (entry → candidates, entry → ranker). Client and servers share this
machine's cores; traffic goes to 127.0.0.1 only.

    python -m benchmarks.split --concurrency 1,8,32,64 --seconds 60 --out var/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from benchmarks.loadgen import fixed_concurrency, markdown, process_tree_rss_mb, recommend_bodies
from benchmarks.servers import free_port
from benchmarks.serving import BIN, server
from serving.runtime import Runtime
from serving.settings import get_settings

HOPS = 2  # entry → candidates, entry → ranker


def load(name: str, target: str, env: dict[str, str], bodies: list[dict], args: argparse.Namespace) -> list[dict]:
    port = free_port()
    command = [str(BIN / "bentoml"), "serve", target, "--port", str(port), "--host", "127.0.0.1"]
    rows = []
    with server(command, port, env, args.out / f"{name}.log") as (url, pid):
        for concurrency in args.concurrency:
            result = asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, concurrency, args.seconds))
            result.rss_mb_end = process_tree_rss_mb(pid)
            rows.append({"server": name, **result.summary(), "error_kinds": dict(result.errors)})
            print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--concurrency", default="1,8,32,64", help="comma-separated connection counts")
    cli.add_argument("--seconds", type=float, default=60, help="per concurrency level")
    cli.add_argument("--unhardened", action="store_true", help="also the split form with BentoML's client as released")
    cli.add_argument("--skip-single", action="store_true", help="the split form only")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    args = cli.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    runtime = Runtime.from_settings(get_settings())
    tags = runtime.tags
    bodies = recommend_bodies([str(u) for u in runtime.candidates.user_ids], 5000, seed=2)
    del runtime
    # The pair pinned: a retrain into the store during the run must not change what is measured.
    env = {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": "",
        "RECSYS_RANKER_TAG": tags.ranker,
        "RECSYS_CANDIDATES_TAG": tags.candidates,
    }
    report: dict = {"machine": f"{os.cpu_count()} cores, shared", "seconds": args.seconds, "model": tags.model_dump()}
    report["single"] = [] if args.skip_single else load("single-process", "service:Recommender", env, bodies, args)
    report["split"] = load("split", "split_service:Entry", env, bodies, args)
    if args.unhardened:
        unhardened = {**env, "RECSYS_SPLIT_HARDENED": "false"}
        report["split_unhardened"] = load("split, client as released", "split_service:Entry", unhardened, bodies, args)
    if 1 in args.concurrency and report["single"]:
        i = args.concurrency.index(1)
        extra = report["split"][i]["p50_ms"] - report["single"][i]["p50_ms"]
        report["cost_per_hop_ms_p50"] = round(extra / HOPS, 2)
    rows = report["single"] + report["split"] + report.get("split_unhardened", [])
    print("\n" + markdown([{k: v for k, v in row.items() if k != "error_kinds"} for row in rows]))
    print(f"cost per hop (p50 at 1 connection): {report.get('cost_per_hop_ms_p50')} ms")
    (args.out / "split.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'split.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
