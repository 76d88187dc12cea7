"""What `recent_items` costs a request: the same queries with and without them, in-process (no HTTP).

Known users with 0, 10 and 50 recent items and anonymous visitors with 10 and
50, k = 10, one request per call as the service makes them. The cases are
interleaved (each user's cases back to back, in an order rotated from one
user to the next), so drifts in the machine's speed hit every case alike.
Prints p50/p99 per case, the p50 added over the same users without recent
items, and the median of the per-call differences (paired).

Uses the models in the BentoML store (train first: ``python -m train``).

    python -m benchmarks.recent_items --n 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from serving import heap
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query, RecentEvent


def timings(runtime: Runtime, cases: dict[str, list[Query]]) -> dict[str, np.ndarray]:
    """Milliseconds per call for each case, interleaved, after a warm-up of 50 calls per case."""
    names = list(cases)
    for name in names:
        for query in cases[name][:50]:
            runtime.pipeline.recommend([query])
    out: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(len(cases[names[0]])):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            query = cases[name][turn]
            start = time.perf_counter()
            runtime.pipeline.recommend([query])
            out[name].append((time.perf_counter() - start) * 1000)
    return {name: np.array(ms) for name, ms in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per case")
    args = parser.parse_args()
    threadpool_limits(1)  # as in a service worker
    runtime = Runtime.from_settings(get_settings())
    heap.settle()  # as a worker does after loading (serving/heap.py)
    rng = np.random.default_rng(0)
    users = rng.choice(np.asarray(runtime.candidates.user_ids, dtype=str), args.n)
    items = np.asarray(runtime.candidates.item_ids, dtype=str)

    def recent(n: int) -> list[RecentEvent]:
        return [RecentEvent(str(i), None, 1.0) for i in rng.choice(items, n, replace=False)] if n else []

    cases = {
        "known user, no recent items": [Query(str(u), 10) for u in users],
        "known user, 10 recent items": [Query(str(u), 10, recent_items=recent(10)) for u in users],
        "known user, 50 recent items": [Query(str(u), 10, recent_items=recent(50)) for u in users],
        "anonymous, 10 recent items": [Query(f"visitor-{i}", 10, recent_items=recent(10)) for i in range(args.n)],
        "anonymous, 50 recent items": [Query(f"visitor-{i}", 10, recent_items=recent(50)) for i in range(args.n)],
    }
    measured = timings(runtime, cases)
    base = measured["known user, no recent items"]
    print("| request | p50 ms | p99 ms | p50 added | added, paired p50 |\n|---|---:|---:|---:|---:|")
    for name, ms in measured.items():
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        added, paired = p50 - np.percentile(base, 50), np.percentile(ms - base, 50)
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {added:+.3f} | {paired:+.3f} |")


if __name__ == "__main__":
    main()
