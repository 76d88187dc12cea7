"""A Dask worker for ``python -m train --engine tcp://…``: this code's kernels pinned first, then Dask's own worker.

A cluster's workers must build the rows this process would (train/engine.py
checks every task's worker). Started as ``dask worker`` they would load
numpy's and OpenBLAS's native kernels and, on another kind of CPU, compute
other sums; started as::

    python -m train.worker tcp://scheduler:8786 --nthreads 1

they restart with the kernels ``python -m train`` pins (train/kernels.py),
and every option after the address is ``dask worker``'s.
"""

from __future__ import annotations

from train.kernels import restart_with_pinned_kernels


def main() -> None:
    restart_with_pinned_kernels()
    from distributed.cli.dask_worker import main as dask_worker

    dask_worker(prog_name="python -m train.worker")  # click reads the command line itself


if __name__ == "__main__":
    main()
