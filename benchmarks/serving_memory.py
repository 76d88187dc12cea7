"""Serving memory: what a pod holds with one worker and with several (PSS summed over the server's processes).

PSS (proportional set size) counts a page shared by k processes as 1/k in
each, so the sum over a server's processes is what the pod costs the machine.
For each worker count: ``bentoml serve service:Recommender`` with the model in
the store (``RECSYS_RANKER_TAG``, or the latest) and ``RECSYS_FEATURE_STORE``
as the service reads them, requests until every worker has answered, then
``/proc/<pid>/smaps_rollup`` of the supervising process and each worker::

    python -m benchmarks.serving_memory --workers 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from benchmarks.loadgen import fixed_concurrency, recommend_bodies
from benchmarks.servers import PROC, cmdline, free_port, process_tree
from benchmarks.serving import server
from serving.runtime import Runtime
from serving.settings import get_settings

BIN = Path(sys.executable).parent
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def smaps(pid: int) -> dict[str, float]:
    """Rss, Pss and private memory of one process, in MB (empty if it is gone)."""
    try:
        lines = (PROC / str(pid) / "smaps_rollup").read_text().splitlines()
    except OSError:
        return {}
    kb = {line.split(":")[0]: int(line.split()[1]) for line in lines[1:] if line.split(":")[0] in FIELDS}
    return {
        "rss_mb": kb["Rss"] / 1024,
        "pss_mb": kb["Pss"] / 1024,
        "private_mb": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024,
    }


def measure(workers: int, users: list[str], seconds: float) -> dict:
    """One server with ``workers`` workers: memory per process after it answered for ``seconds``."""
    port = free_port()
    command = [str(BIN / "bentoml"), "serve", "service:Recommender", "--port", str(port)]
    with server(command, port, {"RECSYS_WORKERS": str(workers), "RECSYS_REFRESH_SECONDS": "0"}) as (url, pid):
        bodies = recommend_bodies(users, 5000, seed=3)
        asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, 4 * workers, seconds))  # every worker answers
        time.sleep(1)
        processes = [
            {"pid": p, "role": "supervisor" if p == pid else _role(p), **smaps(p)} for p in [pid, *process_tree(pid)]
        ]
    processes = [p for p in processes if "pss_mb" in p]
    return {
        "workers": workers,
        "pss_mb": round(sum(p["pss_mb"] for p in processes), 1),
        "rss_mb": round(sum(p["rss_mb"] for p in processes), 1),
        "processes": [{k: round(v, 1) if isinstance(v, float) else v for k, v in p.items()} for p in processes],
    }


def _role(pid: int) -> str:
    line = cmdline(pid) or ""
    return "worker" if "worker" in line or "_bentoml_impl" in line else line[:60]


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    cli.add_argument("--seconds", type=float, default=5, help="requests before measuring")
    cli.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = cli.parse_args(argv)
    runtime = Runtime.from_settings(get_settings())
    users = [str(u) for u in runtime.candidates.user_ids[:: max(1, len(runtime.candidates.user_ids) // 5000)]]
    del runtime
    results = [measure(int(n), users, args.seconds) for n in args.workers.split(",")]
    print("| workers | pod PSS MB | pod RSS MB | per process (role: PSS / private MB) |")
    print("|---:|---:|---:|---|")
    for row in results:
        parts = ", ".join(f"{p['role']}: {p['pss_mb']:.0f} / {p['private_mb']:.0f}" for p in row["processes"])
        print(f"| {row['workers']} | {row['pss_mb']:.0f} | {row['rss_mb']:.0f} | {parts} |")
    if len(results) > 1:
        print(
            f"PSS of {results[-1]['workers']} workers / {results[0]['workers']}: "
            f"{results[-1]['pss_mb'] / results[0]['pss_mb']:.2f}x"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
