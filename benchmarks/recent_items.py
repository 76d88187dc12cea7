"""What `recent_items` costs a request: the same queries with and without them, in-process (no HTTP).

Known users with 0, 10 and 50 recent items and anonymous visitors with 10 and
50, k = 10, one request per call as the service makes them. Prints p50/p99
per case and the p50 added over the same users without recent items.

Uses the models in the BentoML store (train first: ``python -m train``).

    python -m benchmarks.recent_items --n 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query, RecentEvent


def timings(runtime: Runtime, queries: list[Query]) -> np.ndarray:
    """Milliseconds per call, after a warm-up of 50 calls."""
    for query in queries[:50]:
        runtime.pipeline.recommend([query])
    out = []
    for query in queries:
        start = time.perf_counter()
        runtime.pipeline.recommend([query])
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per case")
    args = parser.parse_args()
    threadpool_limits(1)  # as in a service worker
    runtime = Runtime.from_settings(get_settings())
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
    base = None
    print("| request | p50 ms | p99 ms | p50 added |\n|---|---:|---:|---:|")
    for name, queries in cases.items():
        ms = timings(runtime, queries)
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        base = p50 if base is None else base
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 - base:+.3f} |")


if __name__ == "__main__":
    main()
