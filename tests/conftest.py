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

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features.schema import Dataset, validate_interactions  # noqa: E402
from features.synthetic import generate, write  # noqa: E402
from serving.runtime import Runtime  # noqa: E402
from tests.support import BENTOML, FIGURES, REPO, SMALL, quick_config, serve  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.run import RunResult, train  # noqa: E402


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


DAY = 86_400


@pytest.fixture()
def tiny() -> Dataset:
    """Two users, three items; u1 likes drama, u2 comedy; item c is only recent."""
    inter = validate_interactions(
        pd.DataFrame(
            {
                "user_id": ["u1", "u1", "u2", "u2", "u2"],
                "item_id": ["a", "b", "a", "c", "b"],
                "timestamp": [0, DAY, 2 * DAY, 60 * DAY, 59 * DAY],
                "weight": [4.0, 2.0, 1.0, 5.0, 3.0],
            }
        )
    )
    items = pd.DataFrame(
        {
            "title": ["A", "B", "C"],
            "genres": [("drama",), ("drama", "comedy"), ("comedy",)],
            "year": [1990.0, 2000, 2010],
        },
        index=pd.Index(["a", "b", "c"], name="item_id"),
    )
    users = pd.DataFrame({"job": ["x", "y"], "age": [20.0, 40.0]}, index=pd.Index(["u1", "u2"], name="user_id"))
    return Dataset(inter, users, items)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, synthetic_files) -> tuple[RunResult, Path]:
    """One quick training run on the small synthetic data, saved to the session's store."""
    tmp = tmp_path_factory.mktemp("small-run")
    files = synthetic_files["parquet"]
    config = quick_config(tmp, interactions=files["interactions"], users=files["users"], items=files["items"])
    return train(config, echo=False), tmp


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


@pytest.fixture(scope="session", params=["repo", "bento"])
def server(request, movielens_run, tmp_path_factory):
    """The same API served two ways: from the source tree and from the Bento, elsewhere."""
    run, _ = movielens_run
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": str(tmp_path_factory.mktemp("events")),
    }
    if request.param == "repo":
        with serve("service:Recommender", env) as live:
            yield live
    else:
        tag = request.getfixturevalue("bento_tag")
        with serve(tag, env, cwd=tmp_path_factory.mktemp("elsewhere")) as live:
            yield live


@pytest.fixture(scope="session")
def client(server):
    """An HTTP client of :func:`server`."""
    with server.client() as http:
        yield http


@pytest.fixture(scope="session")
def offline(movielens_run) -> Runtime:
    """The MovieLens models loaded in-process: what the served answers must equal."""
    return Runtime.from_store(movielens_run[0].ranker_tag)
