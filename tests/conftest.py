"""Shared fixtures. BentoML reads BENTOML_HOME once, so it is set before any import of bentoml.

`make test` runs the suite on two pytest-xdist workers, a file at a time. Each
worker has a model store of its own (tests compare a store before and after),
and the MovieLens model and the small synthetic one are each trained once per
session: by the first worker that needs it, while the others wait or start on
files that do not need it.
"""

from __future__ import annotations

import fcntl
import os
import pickle  # nosec B403: our own file, written a moment ago by another worker of this session
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_STORE = tempfile.mkdtemp(prefix="recsys-test-bentoml-")
os.environ["BENTOML_HOME"] = _STORE
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.pop("RECSYS_FEATURE_STORE", None)
os.environ.pop("RECSYS_API_KEY", None)

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features.schema import Dataset, validate_interactions  # noqa: E402
from features.synthetic import generate, write  # noqa: E402
from serving.runtime import Runtime  # noqa: E402
from tests.support import BENTOML, FIGURES, REPO, SMALL, quick_config, serve  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.kernels import pinned_environment  # noqa: E402
from train.run import RunResult, train  # noqa: E402

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... in an xdist worker; None in a plain run


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus) -> None:
    """The session's model store and Bentos are throwaway: remove them. A worker hands its figures on."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["figures"] = list(FIGURES)
    shutil.rmtree(_STORE, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist, in the controller: keep a finished worker's figures for the summary."""
    FIGURES.extend(getattr(node, "workeroutput", {}).get("figures", []))


SERVED = re.compile(r"^tests/e2e/[^:]+::[^\[]+\[(repo|bento)\b")  # tests of the `server` fixture's two forms


def _unit(nodeid: str) -> str:
    """What xdist hands a worker in one piece: a test file, or every test of the ``server`` fixture together.

    ``server`` is session-scoped and parametrized (the repo, the Bento): in one process pytest runs all
    of one form's tests, then the other's, so two servers start. Split by file, each of its six files
    started both again on its worker: twelve starts.
    """
    return "the served API, from the repo and the Bento" if SERVED.match(nodeid) else nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist, in the controller: ``--dist loadfile``, with the ``server`` fixture's tests as one unit."""
    from xdist.scheduler import LoadFileScheduling

    class ServedApiTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ServedApiTogether(config, log) if config.getoption("dist") == "loadfile" else None


def _needs_movielens(items: list[pytest.Item]) -> bool:
    return any("movielens_run" in item.fixturenames for item in items)


def pytest_collection_modifyitems(session, config, items: list[pytest.Item]) -> None:
    """Under xdist, order the units (see :func:`_unit`) so that one worker trains the MovieLens model while
    the other runs what needs none of it.

    xdist hands units out in this order, each to the worker about to run out
    of work. First the served API (the worker that takes it trains the shared
    model), then the end-to-end files that need no MovieLens model, then the
    other end-to-end files; the unit files, many and short, come last and
    even out the end. Within a unit the tests keep pytest's order (one server
    form after the other). Every worker computes the same order, as xdist
    requires.
    """
    if WORKER is None:
        return
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_unit(item.nodeid), []).append(item)
    end_to_end = [u for u in units if not u.startswith("tests/unit/")]
    needing = [u for u in end_to_end if _needs_movielens(units[u])]
    free = [u for u in end_to_end if u not in needing]
    order = needing[:1] + free + needing[1:]
    order += [u for u in units if u not in order]
    items[:] = [item for unit in order for item in units[unit]]


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
    """One quick training run on the small synthetic data, saved to the session's store (once per session)."""
    files = synthetic_files["parquet"]  # the same files in every worker: generated from one seed

    def quick(root: Path) -> RunResult:
        config = quick_config(root, interactions=files["interactions"], users=files["users"], items=files["items"])
        return train(config, echo=False)

    return _trained_once(tmp_path_factory, "small-run", quick)


def _train_movielens(root: Path) -> RunResult:
    """The default training as ``python -m train`` runs it: in a child process with the kernels that command pins
    (train/kernels.py), so the session's model is the one `make serve` trains on any AVX2 machine. Trained in this
    process, with the kernels it loaded, an AVX-512 machine trained another model and the README's example answer
    failed there."""
    config = TrainConfig(feature_store=str(root / "feature_store"), report_dir=root / "reports")
    given, result = root / "config.pickle", root / "result.pickle"
    given.write_bytes(pickle.dumps(config))
    child = (
        "import pickle, sys\n"
        "from threadpoolctl import threadpool_limits\n"
        "from train.run import train\n"
        "with threadpool_limits(1, 'blas'):  # as python -m train runs it\n"
        "    run = train(pickle.loads(open(sys.argv[1], 'rb').read()), echo=False)\n"
        "open(sys.argv[2], 'wb').write(pickle.dumps(run))\n"
    )
    simd = np.show_config(mode="dicts")["SIMD Extensions"]
    env = {**os.environ, **pinned_environment(os.environ, platform.machine(), simd)}
    subprocess.run([sys.executable, "-c", child, str(given), str(result)], cwd=REPO, env=env, check=True)
    return pickle.loads(result.read_bytes())  # nosec B301: written by the child just now


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """One worker of the session at a time (a lock file every worker can see)."""
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def movielens_run(tmp_path_factory) -> tuple[RunResult, Path]:
    """One real training run on MovieLens-100K, saved to the session's store."""
    return _trained_once(tmp_path_factory, "movielens", _train_movielens)


def _trained_once(tmp_path_factory, name: str, training: Callable[[Path], RunResult]) -> tuple[RunResult, Path]:
    """A training run made once per session, in the directory it returns, its models in this worker's store.

    Under xdist the first worker to get here trains and exports both models;
    the others import them into their own stores. The feature store and the
    reports are shared: tests that change a feature store copy it first.
    """
    if WORKER is None:
        root = tmp_path_factory.mktemp(name)
        return training(root), root
    root = tmp_path_factory.getbasetemp().parent / name  # one directory for all of this session's workers
    with _exclusive(root.with_suffix(".lock")):
        if not (root / "run.pickle").exists():
            root.mkdir(exist_ok=True)  # a worker whose training failed may have left it
            run = training(root)
            for tag in (run.candidates_tag, run.ranker_tag):
                bentoml.models.export_model(tag, str(root / f"{tag.split(':')[0]}.bentomodel"))
            (root / "run.pickle").write_bytes(pickle.dumps(run))
            return run, root
    run = pickle.loads((root / "run.pickle").read_bytes())  # nosec B301: see the import
    for tag in (run.candidates_tag, run.ranker_tag):
        bentoml.models.import_model(str(root / f"{tag.split(':')[0]}.bentomodel"))
    return run, root


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
