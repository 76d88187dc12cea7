"""Training cuts built on a Dask cluster: each cut's stage and rows on a worker, the fits here.

A training cut's stage (the candidate model and every feature as of the cut)
depends on nothing but the data and the cut, and the rankers need only the
rows built from it; so cuts are independent tasks, and only rows travel back.
``--engine local:N`` starts N worker processes on this machine; a scheduler's
address (``tcp://host:8786``) uses a cluster whose workers run this same code
(the same image or environment, started with ``python -m train.worker``).
Without ``--engine`` everything runs in this process, one stage at a time.
Either way the rows, so the models, are the same
(tests/unit/train/test_engine.py): every task first checks that its worker runs
this code with these kernels, and fails with an :class:`EngineError` otherwise.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import platform
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from features.schema import Dataset
from stages.candidates import CandidateParams
from stages.feature_view import FeatureNames
from train.kernels import kernels_in_use
from train.ranker_training import RankerParams, RowBlock, RowKey, cut_rows

LOCAL = re.compile(r"^local(?::(\d+))?$")
ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://\S+$")
CONNECT_TIMEOUT = 20.0  # seconds a scheduler's address is tried, and a first worker awaited (--engine-timeout)
CODE_PACKAGES = ("features", "stages", "train")  # what a worker's tasks run
LIBRARIES = ("numpy", "scipy", "pandas", "pyarrow", "implicit", "catboost")  # what they run it with


class EngineError(ValueError):
    """An ``--engine`` that names no engine, or a cluster that cannot be reached: the message says which."""


def check_spec(spec: str) -> str:
    """``local``, ``local:N`` (N ≥ 1) or a scheduler address; anything else is an :class:`EngineError`."""
    local = LOCAL.match(spec)
    if local and (local.group(1) is None or int(local.group(1)) >= 1):
        return spec
    if ADDRESS.match(spec):
        return spec
    raise EngineError(
        f"--engine {spec!r}: expected 'local' (a worker per core), 'local:N' (N workers on this machine) "
        "or a Dask scheduler's address such as tcp://scheduler:8786"
    )


@cache
def identity() -> dict[str, Any]:
    """What a worker must share with this process to build the same rows: the code its tasks run (a digest of
    the packages' sources), the Python and libraries it runs it with, and the kernels its float sums use
    (train/kernels.py)."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        root = Path(str(importlib.import_module(package).__file__)).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    versions = {name: importlib.metadata.version(name) for name in LIBRARIES}
    return {"code": digest.hexdigest()[:16], "python": platform.python_version(), **versions, **kernels_in_use()}


def check_identity(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """An :class:`EngineError` naming what differs when a worker's :func:`identity` is not this process's."""
    differs = sorted(key for key in expected.keys() | found.keys() if expected.get(key) != found.get(key))
    if differs:
        detail = "; ".join(f"{key} {expected.get(key)} here, {found.get(key)} there" for key in differs)
        raise EngineError(
            f"worker {where} runs other code or kernels than this process ({detail}): its rows would train another "
            "model. Start workers from this checkout's environment or image with `python -m train.worker`"
        )


def _checked(expected: dict[str, Any], task: Callable[..., Any], *args: Any) -> Any:
    """``task(*args)`` on a worker, once the worker is known to be like the process that sent it."""
    from dask.distributed import get_worker

    check_identity(expected, identity(), get_worker().address)
    return task(*args)


class DaskEngine:
    """Builds training cuts' rows as tasks on a Dask cluster (a :class:`train.ranker_training.RowEngine`)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._data: tuple[Dataset, Any] | None = None  # the dataset last sent, and its handle on the cluster

    def rows_at(
        self, dataset: Dataset, candidates: CandidateParams, wanted: dict[int, list[str]], params: RankerParams
    ) -> Iterator[tuple[int, FeatureNames, dict[RowKey, RowBlock | None]]]:
        """Every cut of ``wanted`` at once, one task each; yields each as it is done, and frees it there."""
        from dask.distributed import as_completed

        tasks = {self.submit(cut_rows, dataset, candidates, cut, kinds, params): cut for cut, kinds in wanted.items()}
        for task in as_completed(tasks):  # type: ignore[no-untyped-call]  # distributed: untyped
            names, rows = task.result()
            cut = tasks.pop(task)
            task.release()
            yield cut, names, rows

    def submit(self, task: Callable[..., Any], dataset: Dataset, *args: Any) -> Any:
        """``task(dataset, *args)`` on a worker (a Dask future); the dataset is sent to every worker once.

        Checked there first (:func:`_checked`): a worker that joined later, from another image, fails the task
        with an :class:`EngineError` rather than training another model.
        """
        return self.client.submit(_checked, identity(), task, self._scattered(dataset), *args, pure=False)

    def _scattered(self, dataset: Dataset) -> Any:
        """The dataset on every worker, sent once (``hash=False``: hashing 20M rows costs more than sending)."""
        if self._data is None or self._data[0] is not dataset:
            self._data = (dataset, self.client.scatter(dataset, broadcast=True, hash=False))
        return self._data[1]


@contextmanager
def connect(spec: str | None, timeout: float = CONNECT_TIMEOUT) -> Iterator[DaskEngine | None]:
    """The engine ``spec`` names, closed on exit (``None``: no engine, everything in this process).

    A scheduler's address is tried for ``timeout`` seconds, then its first worker awaited as long.
    """
    if not spec:
        yield None
        return
    check_spec(spec)
    identity()  # what workers must match, taken now: not from files edited while training runs
    from dask.distributed import Client, LocalCluster

    local = LOCAL.match(spec)
    cluster = None
    try:
        if local:
            workers = int(local.group(1) or os.cpu_count() or 1)
            # Processes, a thread each: a stage's ALS fit parallelises itself, and pandas holds the GIL.
            cluster = LocalCluster(  # type: ignore[no-untyped-call]  # distributed: untyped
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",  # this machine only
                dashboard_address=None,
                # No dashboard; its HTTP server (health, metrics) on a free port, not 8787, which another may hold.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)  # type: ignore[no-untyped-call]  # distributed: untyped
        else:
            client = Client(spec, timeout=f"{timeout:g}s")  # type: ignore[no-untyped-call]  # distributed: untyped
    except OSError as exc:  # TimeoutError is one: no scheduler at that address
        if cluster is not None:
            cluster.close()
        raise EngineError(f"--engine {spec}: cannot reach the cluster: {exc}") from exc
    try:
        _await_a_worker(client, spec, timeout)
        yield DaskEngine(client)
    finally:
        client.close()  # type: ignore[no-untyped-call]  # distributed: untyped
        if cluster is not None:
            cluster.close()


def _await_a_worker(client: Any, spec: str, timeout: float) -> None:
    """A scheduler with no workers would hold every task forever: give it ``timeout`` seconds to get one."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as exc:
        raise EngineError(
            f"--engine {spec}: no worker joined the cluster within {timeout:g} s "
            "(start some with `python -m train.worker <scheduler address>`, or give them longer: --engine-timeout)"
        ) from exc
