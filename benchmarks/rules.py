"""What rules and explanations cost per request: in-process pipeline calls, one user at a time, k = 10.

Runs the same users through ``TwoStageRecommender.recommend`` plain, with a
filter, with ``explain`` and with ``diversity``, and prints p50/p99 of each and
the cost of building a filter's mask (a new filter, not the cached one)::

    BENTOML_HOME=... RECSYS_FEATURE_STORE=... python -m benchmarks.rules [--users 300] [--repeat 3] [--variants explain]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.loadgen import markdown
from serving import heap
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query, TwoStageRecommender
from stages.rules import AttributeFilter, Catalogue, as_filters

K = 10
COMEDY = {"genres": AttributeFilter(include=("Comedy",)), "release_year": AttributeFilter(gte=1990)}
VARIANTS = {
    "plain": {},
    "filters (Comedy, release_year >= 1990)": {"filters": COMEDY},
    "explain": {"explain": True},
    "diversity 0.5": {"diversity": 0.5},
    "offset 20": {"offset": 20},
}


def timings(pipeline: TwoStageRecommender, users: list[str], repeat: int, names: list[str]) -> dict[str, np.ndarray]:
    """Milliseconds per single-user call for every variant, interleaved so load on the machine hits all alike.

    Each user's variants run back to back, in an order rotated from one user to
    the next, so no variant always runs first (on cold caches) or last.
    """
    for name in names:  # warm-up: row plans, tree tables, filter masks
        pipeline.recommend([Query(users[0], K, **VARIANTS[name])])
    out: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(repeat):
        for user in users:
            turn += 1
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                query = Query(user, K, **VARIANTS[name])
                start = time.perf_counter()
                pipeline.recommend([query])
                out[name].append((time.perf_counter() - start) * 1000)
    return {name: np.array(out[name]) for name in names}


def mask_cost(catalogue: Catalogue, repeat: int = 200) -> np.ndarray:
    """Milliseconds to build a filter's mask from scratch (the cache emptied before each)."""
    out = []
    for _ in range(repeat):
        catalogue._cache.clear()
        start = time.perf_counter()
        catalogue.mask(as_filters(COMEDY))
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--users", type=int, default=300)
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="plain is always measured"
    )
    args = cli.parse_args(argv)
    threadpool_limits(1)
    runtime = Runtime.from_settings(get_settings())
    heap.settle()  # as a worker does after loading: the models out of full collections (serving/heap.py)
    pipeline = runtime.pipeline
    users = [str(u) for u in runtime.candidates.user_ids[: args.users]]
    rows = []
    measured = timings(pipeline, users, args.repeat, ["plain", *(v for v in args.variants if v != "plain")])
    plain = measured["plain"]
    for name, ms in measured.items():
        extra = ms - plain  # paired: the same user, back to back, so machine load mostly cancels
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        rows.append(
            {
                "variant": name,
                "p50 ms": round(float(p50), 3),
                "p99 ms": round(float(p99), 3),
                # What a target like "adds <= 1 ms p99" means: this variant's p99 less plain's, same run.
                "+p50 ms": round(float(p50 - np.percentile(plain, 50)), 3),
                "+p99 ms": round(float(p99 - np.percentile(plain, 99)), 3),
                # Per-call differences: their p99 is the spread of single calls more than a cost.
                "+p50 ms (paired)": round(float(np.percentile(extra, 50)), 3),
                "+p99 ms (paired)": round(float(np.percentile(extra, 99)), 3),
            }
        )
    cost = mask_cost(pipeline.view.catalogue)
    blank = {"p99 ms": None, "+p50 ms": None, "+p99 ms": None, "+p50 ms (paired)": None, "+p99 ms (paired)": None}
    built = round(float(np.percentile(cost, 50)), 4)
    rows.append({"variant": "filter mask, built (uncached)", "p50 ms": built, **blank})
    rows.append({"variant": "filter mask, cached", "p50 ms": round(_cached(pipeline.view.catalogue), 4), **blank})
    print(markdown(rows))


def _cached(catalogue: Catalogue, repeat: int = 1000) -> float:
    filters = as_filters(COMEDY)
    catalogue.mask(filters)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        catalogue.mask(filters)
        out.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(out, 50))


if __name__ == "__main__":
    main()
