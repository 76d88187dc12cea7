"""What rules and explanations cost per request: in-process pipeline calls, one user at a time, k = 10.

Runs the same users through ``TwoStageRecommender.recommend`` plain, with a
filter, with ``explain`` and with ``diversity``, and prints p50/p99 of each and
the cost of building a filter's mask (a new filter, not the cached one)::

    BENTOML_HOME=... RECSYS_FEATURE_STORE=... python -m benchmarks.rules [--users 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.loadgen import markdown
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


def timings(pipeline: TwoStageRecommender, users: list[str], repeat: int) -> dict[str, np.ndarray]:
    """Milliseconds per single-user call for every variant, interleaved so load on the machine hits all alike."""
    for fields in VARIANTS.values():  # warm-up: row plans, tree tables, filter masks
        pipeline.recommend([Query(users[0], K, **fields)])
    out: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeat):
        for user in users:
            for name, fields in VARIANTS.items():
                query = Query(user, K, **fields)
                start = time.perf_counter()
                pipeline.recommend([query])
                out[name].append((time.perf_counter() - start) * 1000)
    return {name: np.array(ms) for name, ms in out.items()}


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
    args = cli.parse_args(argv)
    threadpool_limits(1)
    runtime = Runtime.from_settings(get_settings())
    pipeline = runtime.pipeline
    users = [str(u) for u in runtime.candidates.user_ids[: args.users]]
    rows = []
    measured = timings(pipeline, users, args.repeat)
    plain = measured["plain"]
    for name, ms in measured.items():
        extra = ms - plain  # paired: the same user, back to back, so machine load mostly cancels
        rows.append(
            {
                "variant": name,
                "p50 ms": round(float(np.percentile(ms, 50)), 3),
                "p99 ms": round(float(np.percentile(ms, 99)), 3),
                "+p50 ms (paired)": round(float(np.percentile(extra, 50)), 3),
                "+p99 ms (paired)": round(float(np.percentile(extra, 99)), 3),
            }
        )
    cost = mask_cost(pipeline.view.catalogue)
    blank = {"p99 ms": None, "+p50 ms (paired)": None, "+p99 ms (paired)": None}
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
