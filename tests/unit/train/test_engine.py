"""Training cuts on a Dask cluster (local mode, two worker processes): the same rows and models as in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from features.schema import Columns
from stages.candidates import CandidateParams
from tests.support import quick_config
from train.__main__ import EXIT_BAD_DATA, main
from train.backtest import BacktestParams, run_backtest
from train.engine import CODE_PACKAGES, connect
from train.ranker_training import RankerParams, Stages, fit_rankers
from train.run import train

pytestmark = pytest.mark.slow  # starts worker processes
CANDIDATES = CandidateParams(factors=8, iterations=2)
RANKER = RankerParams(n_candidates=20, iterations=20, train_cuts=3, max_users=300)


REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def local_engine():
    with connect("local:2") as engine:
        yield engine


def assert_same_rows(here: Stages, there: Stages) -> None:
    """Every training block built in this process equals the cluster's, field for field."""
    for key, rows in here._rows.items():
        other = there._rows[key]
        assert (rows is None) == (other is None), key
        if rows is not None and other is not None:
            assert np.array_equal(rows.numeric, other.numeric, equal_nan=True), key
            assert (rows.categorical == other.categorical).all() and (rows.labels == other.labels).all(), key
            assert (rows.queries == other.queries).all(), key


def test_a_local_cluster_builds_every_cut_s_rows_and_the_same_rankers(small_dataset, local_engine):
    until = int(small_dataset.interactions[Columns.timestamp].max()) + 1
    here, there = Stages(small_dataset, CANDIDATES), Stages(small_dataset, CANDIDATES, engine=local_engine)
    built_here, _ = fit_rankers(here, until, RANKER, serve_at=None, show_progress=False)
    built_there, _ = fit_rankers(there, until, RANKER, serve_at=None, show_progress=False)
    assert here._rows.keys() == there._rows.keys() and len(here._rows) == 3 * RANKER.train_cuts
    assert [t for t in there.held_stages() if t is not None] == []  # the cuts' stages stayed on the workers
    assert_same_rows(here, there)
    rows = next(r for r in here._rows.values() if r is not None)
    for mine, theirs in [(built_here.main, built_there.main), (built_here.recent, built_there.recent)]:
        assert mine is not None and theirs is not None
        assert np.array_equal(mine.score(rows.numeric, rows.categorical), theirs.score(rows.numeric, rows.categorical))


def test_a_backtest_on_a_local_cluster_scores_every_fold_as_this_process_does(small_dataset, local_engine):
    params = BacktestParams(n_cuts=3, max_users=200)
    here = run_backtest(Stages(small_dataset, CANDIDATES), RANKER, params)
    there = run_backtest(Stages(small_dataset, CANDIDATES, engine=local_engine), RANKER, params)
    assert len(here["cuts"]) == 3 and here["rows"] == there["rows"] and here["summary"] == there["summary"]


def test_training_with_an_engine_evaluates_as_training_without(tmp_path, synthetic_files, small_run):
    files = synthetic_files["parquet"]
    config = quick_config(tmp_path, interactions=files["interactions"], users=files["users"], items=files["items"])
    on_a_cluster = train(config.model_copy(update={"engine": "local:2", "save": False}), echo=False)
    assert on_a_cluster.evaluation["backtest"]["mean"] == small_run[0].evaluation["backtest"]["mean"]
    assert on_a_cluster.evaluation["ranker_training"]["rows"] == small_run[0].evaluation["ranker_training"]["rows"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("local:0", "--engine 'local:0': expected 'local' (a worker per core), 'local:N'"),
        ("spark://host:7077", "--engine 'spark://host:7077': expected 'local'"),
        ("tcp://127.0.0.1:9", "--engine tcp://127.0.0.1:9: cannot reach the cluster"),
    ],
)
def test_an_engine_that_is_not_one_or_cannot_be_reached_exits_2(tmp_path, capsys, spec, message):
    where = ["--feature-store", str(tmp_path / "fs"), "--report-dir", str(tmp_path)]
    assert main(["--engine", spec, "--engine-timeout", "1", *where]) == EXIT_BAD_DATA
    assert message in capsys.readouterr().err


@pytest.fixture()
def scheduler() -> Iterator[str]:
    """A scheduler with no workers of its own, as a cluster's is: its address, as ``--engine`` takes it."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@contextmanager
def worker(address: str, code: Path, log: Path) -> Iterator[None]:
    """``python -m train.worker`` as a cluster's pod runs it, importing the packages found in ``code``."""
    # The test process's kernels (it does not pin them): only the code may differ, on any machine.
    env = {**os.environ, "RECSYS_NATIVE_KERNELS": "1", "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "train.worker", address]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_worker_started_with_train_worker_builds_the_rows_this_process_does(small_dataset, scheduler, tmp_path):
    params = RankerParams(n_candidates=20, iterations=20, train_cuts=1, max_users=300)
    until = int(small_dataset.interactions[Columns.timestamp].max()) + 1
    here = Stages(small_dataset, CANDIDATES)
    fit_rankers(here, until, params, serve_at=None, show_progress=False)
    with worker(scheduler, REPO, tmp_path / "worker.log"), connect(scheduler, timeout=120) as engine:
        there = Stages(small_dataset, CANDIDATES, engine=engine)
        fit_rankers(there, until, params, serve_at=None, show_progress=False)
    assert here._rows.keys() == there._rows.keys() and len(here._rows) == 3
    assert_same_rows(here, there)


def test_a_worker_running_other_code_fails_training_with_exit_2(tmp_path, capsys, scheduler, synthetic_files):
    code = tmp_path / "other"
    for package in CODE_PACKAGES:
        shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (code / "train" / "engine.py").open("a") as source:
        source.write("# a worker one commit behind\n")
    files = synthetic_files["parquet"]
    data = [
        "--interactions",
        str(files["interactions"]),
        "--users",
        str(files["users"]),
        "--items",
        str(files["items"]),
    ]
    with worker(scheduler, code, tmp_path / "worker.log"):
        where = ["--feature-store", str(tmp_path / "fs"), "--report-dir", str(tmp_path)]
        status = main(["--engine", scheduler, "--engine-timeout", "120", *data, *where])
    assert status == EXIT_BAD_DATA
    error = capsys.readouterr().err
    assert "runs other code or kernels than this process (code " in error, error
    assert "python -m train.worker" in error


def test_a_cluster_without_workers_exits_2(tmp_path, capsys, scheduler):
    where = ["--feature-store", str(tmp_path / "fs"), "--report-dir", str(tmp_path)]
    assert main(["--engine", scheduler, "--engine-timeout", "1", *where]) == EXIT_BAD_DATA
    assert f"--engine {scheduler}: no worker joined the cluster within 1 s" in capsys.readouterr().err
