"""The ranker's trees as numpy arrays against CatBoost's ``predict``, across batch sizes: where one beats the other.

Feature rows are those the service builds (known users, one query each,
concatenated into batches of 1 to 6 users); each size is timed both ways,
alternated, thread CPU time per call. ``stages/symmetric_trees.py`` sends
batches of up to ``FAST_ROWS`` rows to the arrays and larger ones to
CatBoost: this prints the numbers that threshold is read from, and checks
on every batch that both give the same scores.

Uses the models in the BentoML store (train first: ``python -m train``).

    python -m benchmarks.tree_scoring
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query
from stages.symmetric_trees import FAST_ROWS


def _cpu_us(call: Callable[[], object], repeats: int) -> float:
    """Median thread CPU time of one call, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        call()
        times.append((time.thread_time_ns() - start) / 1000)
    return float(np.median(times))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, nargs="+", default=[1, 2, 3, 4, 6], help="users per batch")
    cli.add_argument("--repeats", type=int, default=300, help="calls per size and way")
    args = cli.parse_args()
    threadpool_limits(1)
    pipeline = Runtime.from_settings(get_settings()).pipeline
    ranker = pipeline.ranker
    if ranker is None or ranker.trees is None:
        raise SystemExit("the stored ranker is not one the arrays read (see the log): nothing to compare")
    queries = [Query(str(u), k=10) for u in pipeline.candidates.user_ids[: max(args.users)]]
    batch = pipeline.candidate_lists(queries)
    users = np.array([pipeline.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
    numeric, categorical = pipeline.pair_rows(users, batch)
    ends = np.cumsum([len(items) for items in batch.items])
    hashes = pipeline.category_hashes
    assert hashes is not None
    for n_users in args.users:
        rows = int(ends[n_users - 1])
        num, cat = numeric[:rows], categorical[:rows]
        codes = hashes.codes(cat)
        assert codes is not None, "a categorical value without a hash"
        assert np.array_equal(ranker.score(num, cat, codes), ranker.score(num, cat)), "scores differ"
        arrays = catboost = 0.0
        for _ in range(2):  # alternated, so drift hits both ways alike
            arrays += _cpu_us(lambda n=num, c=cat: ranker.score(n, c, hashes.codes(c)), args.repeats // 2)
            catboost += _cpu_us(lambda n=num, c=cat: ranker.score(n, c), args.repeats // 2)
        print(
            json.dumps(
                {
                    "users": n_users,
                    "rows": rows,
                    "arrays_us": round(arrays / 2, 1),
                    "catboost_us": round(catboost / 2, 1),
                    "ratio": round(arrays / catboost, 3),
                    "served_by": "arrays" if rows <= FAST_ROWS else "catboost",
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
