"""A Dask worker for ``python -m train --engine tcp://…``: this code's kernels pinned first, then Dask's own worker.

A cluster's workers must build the rows this process would (train/engine.py
checks every task's worker). Started as ``dask worker`` they would load
numpy's and OpenBLAS's native kernels and, on another kind of CPU, compute
other sums; started as::

    python -m train.worker tcp://scheduler:8786

they restart with the kernels ``python -m train`` pins (train/kernels.py),
then run Dask's worker, one task at a time by default. Dask starts the
worker with ``OMP_NUM_THREADS=1`` unless the environment sets it: set it to
the cores a worker has, or a stage's ALS fit uses one of them (the rows are
the same either way: each user's solve is its own).
"""

from __future__ import annotations

import argparse
import sys

from train.engine import ADDRESS
from train.kernels import restart_with_pinned_kernels


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m train.worker", description=__doc__.split("\n\n")[0])
    cli.add_argument("scheduler", help="the scheduler's address, as --engine takes it (tcp://scheduler:8786)")
    cli.add_argument("--nthreads", type=int, default=1, help="tasks at a time (default: 1)")
    cli.add_argument("--memory-limit", default="auto", help="Dask pauses the worker at 80%% of it (default: auto)")
    cli.add_argument("--name", help="the worker's name on the scheduler (default: its address)")
    args = cli.parse_args(argv)
    if not ADDRESS.match(args.scheduler):
        cli.error(f"{args.scheduler!r} is not a scheduler address such as tcp://scheduler:8786")
    if args.nthreads < 1:
        cli.error("--nthreads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    restart_with_pinned_kernels()
    from distributed.cli.dask_worker import main as dask_worker

    options = [args.scheduler, f"--nthreads={args.nthreads}", f"--memory-limit={args.memory_limit}", "--no-dashboard"]
    dask_worker([*options, *([f"--name={args.name}"] if args.name else [])], prog_name="python -m train.worker")


if __name__ == "__main__":
    main(sys.argv[1:])
