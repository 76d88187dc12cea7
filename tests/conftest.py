"""Shared fixtures. BentoML reads BENTOML_HOME once, so it is set before any import of bentoml."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_STORE = tempfile.mkdtemp(prefix="recsys-test-bentoml-")
os.environ["BENTOML_HOME"] = _STORE
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.pop("RECSYS_FEATURE_STORE", None)
os.environ.pop("RECSYS_API_KEY", None)

import pytest  # noqa: E402

from features.synthetic import SyntheticConfig, generate, write  # noqa: E402
from tests.server import BENTOML, REPO  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.run import RunResult, train  # noqa: E402

SMALL = SyntheticConfig(n_users=300, n_items=200, n_interactions=12_000, n_clusters=4, seed=7)


FIGURES: list[str] = []  # measurements tests want in the CI log (image size, faults)


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus) -> None:
    """The session's model store and Bentos are throwaway: remove them."""
    shutil.rmtree(_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(_STORE)


@pytest.fixture(scope="session")
def small_dataset():
    return generate(SMALL)


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory, small_dataset) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("synthetic")
    return {fmt: write(small_dataset, root / fmt, fmt) for fmt in ("csv", "parquet")}


def quick_config(tmp: Path, **overrides) -> TrainConfig:
    """A fast configuration for tests on small data."""
    values = {
        "ranker_iterations": 60,
        "n_candidates": 50,
        "feature_store": str(tmp / "feature_store"),
        "report_dir": tmp / "reports",
        **overrides,
    }
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def movielens_run(tmp_path_factory) -> tuple[RunResult, Path]:
    """One real training run on MovieLens-100K, saved to the session's store."""
    tmp = tmp_path_factory.mktemp("movielens")
    config = TrainConfig(feature_store=str(tmp / "feature_store"), report_dir=tmp / "reports")
    return train(config, echo=False), tmp


@pytest.fixture(scope="session")
def bento_tag(movielens_run) -> str:
    """`bentoml build` of the repo, with the models just trained."""
    run, _ = movielens_run
    out = subprocess.run(
        [BENTOML, "build", "--output", "tag"],
        cwd=REPO,
        env={**os.environ, "RECSYS_RANKER_TAG": run.ranker_tag},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
