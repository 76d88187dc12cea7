"""What one lone request costs the pipeline in-process: for comparing two versions of the code side by side.

Loads the ranker in the BentoML store (``RECSYS_RANKER_TAG``, default the
latest) and times ``pipeline.recommend([query])`` for known users, k = 10,
one query per call as the service makes them, thread CPU time per call.
Run it from two checkouts at once, each on a core of its own, so drift in
the machine's speed hits both alike::

    (cd /tmp/old-tree && taskset -c 0 env BENTOML_HOME=/tmp/old python -m benchmarks.lone_answer --label old) &
    taskset -c 1 env BENTOML_HOME=/tmp/new python -m benchmarks.lone_answer --label new

It uses only what both versions have (``Runtime.from_store``, ``Query``): copy
it into the other checkout's ``benchmarks/`` when it predates this file.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--label", default="this tree")
    cli.add_argument("--users", type=int, default=900, help="known users, one lone request each per round")
    cli.add_argument("--rounds", type=int, default=5)
    args = cli.parse_args()
    threadpool_limits(1)
    runtime = Runtime.from_store(get_settings().ranker_tag)
    pipeline = runtime.pipeline
    users = [str(u) for u in pipeline.candidates.user_ids[: args.users]]
    for user in users[:100]:  # warm-up: row plans, CatBoost's first calls
        pipeline.recommend([Query(user, k=10)])
    micros = []
    for _ in range(args.rounds):
        for user in users:
            start = time.thread_time_ns()
            pipeline.recommend([Query(user, k=10)])
            micros.append((time.thread_time_ns() - start) / 1000)
    values = np.array(micros)
    print(
        json.dumps(
            {
                "label": args.label,
                "ranker": runtime.tags.ranker,
                "calls": len(values),
                "p50_us": round(float(np.percentile(values, 50)), 1),
                "p90_us": round(float(np.percentile(values, 90)), 1),
                "mean_us": round(float(values.mean()), 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
