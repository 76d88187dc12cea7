"""BentoML as served against the FastAPI reference in alternating rounds: ratios that the machine's drift cancels.

``benchmarks.request_path`` measures one server after the other, minutes
apart, and this machine's speed drifts by up to 20% within an hour: one
connection's ratio came out 0.83×, 0.82× and 0.76× in three runs of the same
code. Here both servers run at once (one worker each; the one not under load
is idle) and every round loads one, then the other, in an order that
alternates, so each round's ratio compares two measurements seconds apart.
Prints each round's requests/s (and p99 for the open loop) per server, the
ratio, and the median over rounds.

Uses the models in the BentoML store (train first: ``python -m train``).
Traffic goes to 127.0.0.1 only; every round is bounded in time.

    python -m benchmarks.server_ratio --rounds 6 --seconds 4 --loads 1,32,rate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.loadgen import LoadResult, fixed_concurrency, fixed_rate, recommend_bodies
from benchmarks.servers import free_port
from benchmarks.serving import BIN, fastapi_reference, server
from serving.runtime import Runtime
from serving.settings import get_settings

SERVERS = ("bentoml", "fastapi")


def load_once(url: str, bodies: list[dict], load: str, seconds: float, rate: float) -> LoadResult:
    """One load on one server: ``rate`` is the open loop at ``rate`` requests/s, a number that many connections."""
    if load == "rate":
        return asyncio.run(fixed_rate(f"{url}/recommend", bodies, rate, seconds))
    return asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, int(load), seconds))


def figure(result: LoadResult, load: str) -> float:
    """What a load's ratio compares: p99 milliseconds for the open loop (lower is better), requests/s otherwise."""
    summary = result.summary()
    return float(summary["p99_ms"] if load == "rate" else summary["rps"])


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--rounds", type=int, default=6)
    cli.add_argument("--seconds", type=float, default=4, help="per server, load and round")
    cli.add_argument("--loads", default="1,32,rate", help="connection counts, and 'rate' for the open loop")
    cli.add_argument("--rate", type=float, default=200, help="open-loop requests/s")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    args = cli.parse_args(argv)
    loads = args.loads.split(",")
    if not loads or any(load != "rate" and not load.isdigit() for load in loads) or args.rounds < 1:
        cli.error("--loads takes connection counts and 'rate'; --rounds at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": "1"})
    users = [str(u) for u in Runtime.from_settings(get_settings()).candidates.user_ids]
    bodies = recommend_bodies(users, 5000, seed=2)
    env = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_EVENT_LOG": "", "RECSYS_HEALTH_PORT": str(free_port())}
    bento_port, fastapi_port = free_port(), free_port()
    bento = [str(BIN / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1", "--port", str(bento_port)]
    rows: list[dict] = []
    with (
        server(bento, bento_port, env, args.out / "server_ratio_bentoml.log") as (bento_url, _),
        server(fastapi_reference(fastapi_port), fastapi_port, log=args.out / "server_ratio_fastapi.log") as (
            fastapi_url,
            _,
        ),
    ):
        urls = dict(zip(SERVERS, (bento_url, fastapi_url), strict=True))
        for url in urls.values():  # warm-up: row plans, first calls
            load_once(url, bodies, "1", 2, args.rate)
        print("| round | load | BentoML | FastAPI | ratio |\n|---|---|---:|---:|---:|", flush=True)
        for round_ in range(args.rounds):
            order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
            for load in loads:
                measured = {
                    name: figure(load_once(urls[name], bodies, load, args.seconds, args.rate), load) for name in order
                }
                row = {
                    "round": round_ + 1,
                    "load": load,
                    **measured,
                    "ratio": measured["bentoml"] / measured["fastapi"],
                }
                rows.append(row)
                print(f"| {row['round']} | {label(load, args.rate)} | {row['bentoml']:.2f} | {row['fastapi']:.2f} | "
                      f"{row['ratio']:.3f} |", flush=True)  # fmt: skip
    medians = {load: statistics.median(r["ratio"] for r in rows if r["load"] == load) for load in loads}
    print("\n| load | median ratio over rounds | lowest | highest |\n|---|---:|---:|---:|")
    for load in loads:
        ratios = [r["ratio"] for r in rows if r["load"] == load]
        print(f"| {label(load, args.rate)} | **{medians[load]:.3f}** | {min(ratios):.3f} | {max(ratios):.3f} |")
    (args.out / "server_ratio.json").write_text(json.dumps({"rows": rows, "medians": medians}, indent=2))
    print(f"wrote {args.out / 'server_ratio.json'}")
    return 0


def label(load: str, rate: float) -> str:
    return f"{rate:g} req/s, p99 ms" if load == "rate" else f"{load} connection{'s' if load != '1' else ''}, requests/s"


if __name__ == "__main__":
    sys.exit(main())
