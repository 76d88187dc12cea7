"""Helpers the tests share: real servers, quick training configs, store snapshots, HTTP calls.

Plain functions and constants only; fixtures live in ``tests/conftest.py``.
Test modules import from here, never from each other. Ports, process groups
and the process tree come from :mod:`benchmarks.servers` (the one copy).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.servers import (
    cmdline,
    free_port,
    parent_pid,
    process_tree,
    running,
    status_field,
    stop,
    worker_pids,
)
from features.schema import DAY, Columns, Dataset
from features.synthetic import SyntheticConfig
from train.config import TrainConfig

__all__ = [
    "BENTOML",
    "FIGURES",
    "KNOWN_USER",
    "REPO",
    "SMALL",
    "Load",
    "Server",
    "cmdline",
    "free_port",
    "parent_pid",
    "post",
    "process_tree",
    "quick_config",
    "run_until_exit",
    "serve",
    "status_field",
    "stop",
    "store_state",
    "tree_digest",
    "wait_for",
    "worker_pids",
]

REPO = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).with_name("bentoml"))
KNOWN_USER = "196"  # a MovieLens-100K user with plenty of history
SMALL = SyntheticConfig(n_users=300, n_items=200, n_interactions=12_000, n_clusters=4, seed=7)
FIGURES: list[str] = []  # measurements tests want in the CI log (image size, faults); printed by conftest


def quick_config(tmp: Path, **overrides) -> TrainConfig:
    """A fast configuration for tests on small data, writing only inside ``tmp``.

    One backtest cut with a short fold ranker: the backtest's own numbers are
    tested on MovieLens (tests/e2e/test_quality.py).
    """
    values = {
        "ranker_iterations": 60,
        "fold_iterations": 30,
        "backtest_cuts": 1,
        "train_cuts": 2,
        "n_candidates": 50,
        "feature_store": str(tmp / "feature_store"),
        "report_dir": tmp / "reports",
        **overrides,
    }
    return TrainConfig(**values)


def store_state(home: Path, feature_store: Path) -> list[str]:
    """Every path in the BentoML model store and a feature store, to compare before and after."""
    paths = [*home.joinpath("models").rglob("*"), *feature_store.rglob("*")]
    return sorted(str(p) for p in paths)


def tree_digest(*roots: Path) -> str:
    """One hash over every path and file's bytes under ``roots``: equal digests, byte-for-byte equal trees."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*")):
            digest.update(str(path.relative_to(root)).encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def post(client: httpx.Client, path: str, body) -> tuple[int, dict]:
    """POST JSON; the status and the decoded answer."""
    response = client.post(path, json=body)
    return response.status_code, response.json()


def answer_of(body: dict) -> dict:
    """A response body without its ``request_id`` (random per response), for comparing answers."""
    return {key: value for key, value in body.items() if key != "request_id"}


def wait_for(predicate: Callable[[], bool], seconds: float = 15) -> bool:
    """Poll ``predicate`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


class Server:
    """A running `bentoml serve`: its process, URL and log file."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


class Load:
    """A few connections sending /recommend back to back until the block ends, counting outcomes.

    Each connection takes the ``users`` in turn (``n``, ``n + connections``, ...). A refused connection
    (nobody listening) counts as "refused"; a request sent and never answered by the name of its error.
    """

    def __init__(self, url: str, users: Sequence[str] = ("196",), connections: int = 4) -> None:
        self.url, self.users, self.stop = url, users, threading.Event()
        self.outcomes: Counter[str] = Counter()
        # (start, when the request was fully written or None: never, outcome) of every request. A start time is
        # taken before the thread writes, which on busy cores can be tens of milliseconds later.
        self.log: list[tuple[float, float | None, str]] = []
        self.lock = threading.Lock()  # Counter's += is not atomic across threads
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(connections)]

    def run(self, n: int) -> None:
        written: list[float] = []

        def trace(event: str, info: dict) -> None:  # httpcore's trace extension
            if event == "http11.send_request_body.complete":
                written.append(time.monotonic())

        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                written.clear()
                start = time.monotonic()
                try:
                    body = {"user_id": self.users[n % len(self.users)], "k": 10}
                    outcome = str(http.post("/recommend", json=body, extensions={"trace": trace}).status_code)
                except httpx.ConnectError:
                    outcome = "refused"  # nobody listening: nothing was in flight
                    time.sleep(0.05)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__  # accepted, then lost
                with self.lock:
                    self.outcomes[outcome] += 1
                    self.log.append((start, written[-1] if written else None, outcome))
                n += len(self.threads)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _ready(url: str, verify: ssl.SSLContext | bool) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serve(
    target: str,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    log: Path | None = None,
    timeout: float = 90,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
    port: int | None = None,
) -> Iterator[Server]:
    """Start a real `bentoml serve` in a subprocess, yield it once /readyz answers 200, stop it after."""
    port = port or free_port()
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"recsys-serve-{port}.log"
    url = f"{scheme}://127.0.0.1:{port}"
    command = [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with running(command, lambda: _ready(url, verify), cwd, env, log, timeout) as process:
        yield Server(process, url, log)


def run_until_exit(target: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    """Start a server that is expected to refuse to start; return its exit code and output."""
    result = subprocess.run(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


# --- point-in-time tests: the data as it was at a cut, and the data with a future burst ---


def cut_at(dataset: Dataset, cut: int) -> Dataset:
    """The data as it was at the cut: every interaction from the cut on removed."""
    inter = dataset.interactions
    return Dataset(inter[inter[Columns.timestamp] < cut].reset_index(drop=True), dataset.users, dataset.items)


def with_future(dataset: Dataset, cut: int, days: int = 120) -> Dataset:
    """All of the data, plus interactions from the cut on over every item and well past it: heavy repeats,
    new users, a new item, one exactly at the cut."""
    inter = dataset.interactions
    rng = np.random.default_rng(5)
    users = inter[Columns.user].unique()
    items = inter[Columns.item].unique()
    n = 3_000
    future = pd.DataFrame(
        {
            Columns.user: np.concatenate([rng.choice(users, n - 40), [f"newcomer{i % 20}" for i in range(40)]]),
            Columns.item: np.concatenate([rng.choice(items, n - 40), ["brand-new"] * 40]),
            Columns.timestamp: cut + rng.integers(0, days * DAY, n),
            Columns.weight: np.float32(5.0),
        }
    )
    future.loc[0, Columns.timestamp] = cut  # exactly at the cut counts as the future too
    return Dataset(pd.concat([inter, future], ignore_index=True), dataset.users, dataset.items)
