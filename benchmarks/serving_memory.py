"""Serving memory: what a pod holds with one worker and with several (PSS summed over the server's processes).

PSS (proportional set size) counts a page shared by k processes as 1/k in
each, so the sum over a server's processes is what the pod costs the machine.
For each worker count: ``bentoml serve service:Recommender`` with the model in
the store (``RECSYS_RANKER_TAG``, or the latest) and ``RECSYS_FEATURE_STORE``
as the service reads them, requests until every worker has answered, then
``/proc/<pid>/smaps_rollup`` of the supervising process and each worker::

    python -m benchmarks.serving_memory --workers 1,4
    python -m benchmarks.serving_memory --steps   # what a worker's own memory is made of, loaded step by step
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def private_mb() -> float:
    """This process's private memory (what a worker does not share with the others), in MB."""
    return smaps(os.getpid())["private_mb"]


def python_object_mb() -> float:
    """Bytes in live blocks of Python's small-object allocator (``sys._debugmallocstats``), in MB."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)  # the stats go to the C stderr
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    with os.fdopen(read) as stats:
        line = next(line for line in stats.read().splitlines() if line.startswith("# bytes in allocated blocks"))
    return int(line.split("=")[1].replace(",", "")) / 2**20


def load_steps() -> list[tuple[str, float]]:
    """A worker's load, one part at a time in this process: the private memory after each."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as a worker
    import pyarrow as pa

    from features.store import MODEL_SNAPSHOT_DIR, read_snapshot
    from serving.runtime import ranker_card, stored_model
    from stages.candidates import CandidateModel
    from stages.card import CandidatesCard
    from stages.feature_view import FeatureView
    from stages.memory import give_back_memory
    from stages.ranker import RANKER_FILE, Ranker

    settings = get_settings()
    steps = [("imports (numpy, pandas, Arrow, CatBoost, implicit, BentoML, this code)", private_mb())]
    ranker_model = stored_model(settings.ranker_tag, "ranker")
    card = ranker_card(ranker_model)
    model = stored_model(settings.candidates_tag or card.candidates_tag, "candidates")
    params = CandidatesCard.from_metadata(model.info.metadata, str(model.tag)).params
    candidates = CandidateModel.load(Path(model.path), params)
    steps.append(("+ candidate model (id maps; factors, seen matrix, neighbours mapped)", private_mb()))
    ranker = Ranker.load(Path(ranker_model.path) / RANKER_FILE, card.features, card.prior)
    ranker.paths  # noqa: B018 (built at load, as the service does)
    steps.append(("+ the main ranker", private_mb()))
    snapshot = read_snapshot(settings.feature_store or str(Path(model.path) / MODEL_SNAPSHOT_DIR))
    steps.append(("+ feature snapshot read (parquet to pandas)", private_mb()))
    view = FeatureView(snapshot.tables, candidates.item_ids, candidates.als.item_factors, snapshot.version)
    view.prepare(card.features)
    steps.append(("+ feature view and row plan built", private_mb()))
    del snapshot
    give_back_memory()
    steps.append(("snapshot tables let go, freed memory given back", private_mb()))
    steps.append(("  of which Python objects (small-object allocator, live blocks)", python_object_mb()))
    steps.append(("  of which Arrow buffers", pa.total_allocated_bytes() / 2**20))
    assert view is not None and ranker is not None  # held until here
    return steps


def _role(pid: int) -> str:
    line = cmdline(pid) or ""
    return "worker" if "worker" in line or "_bentoml_impl" in line else line[:60]


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    cli.add_argument("--seconds", type=float, default=5, help="requests before measuring")
    cli.add_argument("--out", type=Path, help="also write the results here (JSON)")
    cli.add_argument("--steps", action="store_true", help="a worker's private memory, loaded step by step here")
    args = cli.parse_args(argv)
    if args.steps:
        print("| step | private MB |\n|---|---:|")
        for step, mb in load_steps():
            print(f"| {step} | {mb:.0f} |")
        return 0
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
