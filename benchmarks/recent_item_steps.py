"""Where recent items' cost goes: each pipeline step timed, plain requests against requests with recent items.

Known users chosen at random, one request per call as the service makes
them; every step below is wrapped with a timer, and the table gives the
mean microseconds per request with and without recent items. Plain and
recent requests run in blocks (two rounds each), not interleaved: read the
"added" column as where the time goes; the ratio to judge by is
``benchmarks.recent_items`` (interleaved). The wrappers add about a
microsecond a step.

Uses the models in the BentoML store (train first: ``python -m train``).

    python -m benchmarks.recent_item_steps --n 3000
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from features.families import FAMILIES
from serving import heap
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.candidates import CandidateModel
from stages.feature_view import FeatureView
from stages.pipeline import Query, RecentEvent, TwoStageRecommender

STEPS: list[tuple[type, str]] = [
    (TwoStageRecommender, "recommend"),
    (TwoStageRecommender, "_user"),
    (TwoStageRecommender, "_candidate_lists"),
    (CandidateModel, "_top_n"),
    (CandidateModel, "user_vectors"),
    (CandidateModel, "_seeds"),
    (TwoStageRecommender, "_fresh_batch"),
    (TwoStageRecommender, "pair_rows"),
    (FeatureView, "rows"),
    (TwoStageRecommender, "_score_rows"),
    *((family, "fresh") for family in FAMILIES if "fresh" in family.__dict__),
]


def timed(spent: dict[str, float]) -> None:
    """Wrap every step so its seconds add up in ``spent`` (this process only: a benchmark, not the service)."""
    for owner, name in STEPS:
        step: Callable = getattr(owner, name)
        label = f"{owner.__name__}.{name}"

        def wrapper(*args: object, _step: Callable = step, _label: str = label, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return _step(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - start

        setattr(owner, name, functools.wraps(step)(wrapper))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per case and round")
    parser.add_argument("--recent", type=int, default=10, help="recent items per request")
    args = parser.parse_args()
    threadpool_limits(1)  # as in a service worker
    runtime = Runtime.from_settings(get_settings())
    heap.settle()  # as a worker does after loading (serving/heap.py)
    spent: dict[str, float] = collections.defaultdict(float)
    timed(spent)
    rng = np.random.default_rng(0)
    users = rng.choice(np.asarray(runtime.candidates.user_ids, dtype=str), args.n)
    items = np.asarray(runtime.candidates.item_ids, dtype=str)

    def recent() -> list[RecentEvent]:
        return [RecentEvent(str(i), None, 1.0) for i in rng.choice(items, args.recent, replace=False)]

    cases = {
        "plain": [Query(str(u), 10) for u in users],
        "recent": [Query(str(u), 10, recent_items=recent()) for u in users],
    }
    for query in cases["plain"][:200] + cases["recent"][:200]:  # warm-up
        runtime.pipeline.recommend([query])
    means: dict[str, dict[str, float]] = {name: collections.defaultdict(float) for name in cases}
    for _ in range(2):
        for name, queries in cases.items():
            spent.clear()
            for query in queries:
                runtime.pipeline.recommend([query])
            for label, seconds in spent.items():
                means[name][label] += seconds / len(queries) * 1e6 / 2
    print(f"| step | plain, µs | {args.recent} recent items, µs | added, µs |\n|---|---:|---:|---:|")
    for label in sorted(means["recent"], key=lambda k: -means["recent"][k]):
        plain, recent = means["plain"].get(label, 0.0), means["recent"][label]
        print(f"| `{label}` | {plain:.1f} | {recent:.1f} | {recent - plain:+.1f} |")


if __name__ == "__main__":
    main()
