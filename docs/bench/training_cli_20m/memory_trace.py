"""Where a training step's memory goes: one stage's build, or the per-user split, with RSS sampled every 20 ms.

    PYTHONPATH=. python docs/bench/training_cli_20m/memory_trace.py stage DIR   # the stage of all the data
    PYTHONPATH=. python docs/bench/training_cli_20m/memory_trace.py split DIR   # train.run.per_user_split

DIR holds interactions.parquet, users.parquet and items.parquet (``python -m features.synthetic --format
parquet``). The functions of the step are wrapped to mark when each starts and ends; the peak resident set
between two marks is printed for each interval, with the resident set when the step began (the data loaded,
freed memory given back). Native kernels (not ``python -m train``'s pinned ones): memory, not the model, is
measured here.
"""

import itertools
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from threadpoolctl import threadpool_limits

import stages.candidates as candidates
import train.ranker_training as ranker_training
import train.run as run
from features.families import FAMILIES
from train.config import build_config

samples: list[tuple[float, int]] = []
marks: list[tuple[float, str]] = []


def resident_mb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))


def sample() -> None:
    while True:
        samples.append((time.perf_counter(), resident_mb()))
        time.sleep(0.02)


def marked(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        marks.append((time.perf_counter(), f"{name} >"))
        result = function(*args, **kwargs)
        marks.append((time.perf_counter(), f"{name} <"))
        return result

    return call


def mark_steps() -> None:
    model = candidates.CandidateModel
    model.fit = classmethod(marked(model.fit.__func__, "candidate model"))  # type: ignore[method-assign]
    candidates.AlternatingLeastSquares.fit = marked(candidates.AlternatingLeastSquares.fit, "ALS")
    candidates._latest_items = marked(candidates._latest_items, "latest items")
    candidates._co_consumption = marked(candidates._co_consumption, "co-consumption")
    ranker_training.compute_features = marked(ranker_training.compute_features, "feature families")
    ranker_training.FeatureView = marked(ranker_training.FeatureView, "feature view")
    for family in FAMILIES:
        family.compute = staticmethod(marked(family.compute, family.__name__))  # type: ignore[method-assign]
    for name in (
        "holdout_rows",
        "example_rows",
        "fit_on_examples",
        "taken_after",
        "pipeline_lists",
        "candidate_recall",
    ):
        setattr(run, name, marked(getattr(run, name), name))
    ranker_training.CatBoost.fit = marked(ranker_training.CatBoost.fit, "CatBoost fit")
    run.Stages.at = marked(run.Stages.at, "stage")


def main(step: str, directory: str) -> None:
    files = {name: f"{directory}/{name}.parquet" for name in ("interactions", "users", "items")}
    config = build_config({}, files, None)
    threading.Thread(target=sample, daemon=True).start()
    mark_steps()
    with threadpool_limits(1, "blas"):
        dataset = run.load_data(config)
        print(f"loading's peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB", flush=True)
        run.give_back_memory()
        time.sleep(0.1)
        start = resident_mb()
        marks.append((time.perf_counter(), "start"))
        if step == "stage":
            ranker_training.build_stage(dataset, config.candidate_params(), None)
        else:
            result = run.per_user_split(config, dataset)
            print({name: round(m["ndcg@10"], 4) for name, m in result["models"].items()})
        marks.append((time.perf_counter(), "end"))
    print(f"resident when the step began: {start} MB")
    for (began, first), (ended, then) in itertools.pairwise(marks):
        peak = max((mb for t, mb in samples if began <= t <= ended), default=0)
        if peak:
            print(f"{first:>26} -> {then:<26} {ended - began:7.1f} s  peak {peak:6d} MB ({peak - start:+6d})")
    step_peak = max(mb for t, mb in samples if t >= marks[0][0])
    took = marks[-1][0] - marks[0][0]
    print(f"the step's peak: {step_peak} MB ({step_peak - start:+d} over its start), {took:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
