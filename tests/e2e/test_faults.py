"""Faults while serving and while training: what is lost, and what is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from tests.support import FIGURES, REPO, Load, serve, store_state, worker_pids

pytestmark = pytest.mark.slow
CONNECTIONS = 4


def test_killed_worker_is_restarted_and_loses_at_most_the_requests_in_flight(movielens_run):
    env = {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_WORKERS": "2", "RECSYS_REFRESH_SECONDS": "0"}
    with serve("service:Recommender", env) as live:
        before = worker_pids(live.process.pid)
        assert len(before) == 2
        with Load(live.url, connections=CONNECTIONS) as load:
            time.sleep(2)
            os.kill(before[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while len(set(worker_pids(live.process.pid)) - {before[0]}) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
        after = worker_pids(live.process.pid)
        lost = sum(n for outcome, n in load.outcomes.items() if outcome != "200")
        FIGURES.append(f"worker SIGKILLed under load: {dict(load.outcomes)}")
        assert len(after) == 2 and before[0] not in after  # the supervisor started a new one
        assert load.outcomes["200"] > 100
        assert lost <= CONNECTIONS  # only what that worker had in flight
        assert httpx.post(f"{live.url}/recommend", json={"user_id": "196"}).status_code == 200


def test_workers_die_with_a_server_killed_by_sigkill_and_the_port_is_free_again(movielens_run):
    """Each worker has a process group of its own: a SIGKILL of `bentoml serve` left them serving, orphaned."""
    env = {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_WORKERS": "2", "RECSYS_REFRESH_SECONDS": "0"}
    with serve("service:Recommender", env) as live:
        workers = worker_pids(live.process.pid)
        time.sleep(3)  # alive while their server is
        assert len(workers) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in workers)
        os.kill(live.process.pid, signal.SIGKILL)  # the server process alone, as an OOM kill does
        live.process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
        port = int(live.url.rsplit(":", 1)[1])
    with serve("service:Recommender", env, port=port) as again:  # nothing holds the port
        assert httpx.post(f"{again.url}/recommend", json={"user_id": "196"}).status_code == 200


def test_a_second_server_on_the_same_bentoml_home_leaves_the_first_ones_metrics(movielens_run):
    """`bentoml serve` empties BentoML's Prometheus directory at start: the first server's counts vanished."""
    env = {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_WORKERS": "1", "RECSYS_REFRESH_SECONDS": "0"}
    with serve("service:Recommender", env) as first:
        for visitor in range(3):
            assert httpx.post(f"{first.url}/recommend", json={"user_id": f"visitor-{visitor}"}).status_code == 200
        assert _cold_starts(first.url) == 3
        with serve("service:Recommender", env) as second:
            assert _cold_starts(first.url) == 3 and _cold_starts(second.url) == 0
            assert httpx.post(f"{second.url}/recommend", json={"user_id": "visitor-9"}).status_code == 200
            assert _cold_starts(first.url) == 3 and _cold_starts(second.url) == 1


def _cold_starts(url: str) -> float:
    """The server's recsys_cold_start_total (0 before its first cold start)."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("recsys_cold_start_total "))


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_under_load_finishes_in_flight_requests(movielens_run):
    env = {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_REFRESH_SECONDS": "0"}
    with serve("service:Recommender", env) as live, Load(live.url, connections=CONNECTIONS) as load:
        time.sleep(2)
        signalled = time.monotonic()
        live.process.send_signal(signal.SIGTERM)
        code = live.process.wait(timeout=30)
        time.sleep(0.5)
    # Sent before the signal: written in full before it, or lost before it was written though started well
    # before it (a connection the server dropped while serving is a failure too, not a request "after").
    sent_before = [
        (written is not None and written < signalled)
        or (written is None and outcome != "refused" and start < signalled - 0.5)
        for start, written, outcome in load.log
    ]
    before = Counter(outcome for (_, _, outcome), sent in zip(load.log, sent_before, strict=True) if sent)
    after = Counter(outcome for (_, _, outcome), sent in zip(load.log, sent_before, strict=True) if not sent)
    FIGURES.append(f"SIGTERM under load: sent before {dict(before)}, sent after {dict(after)}, exit code {code}")
    assert code == 0
    # Every request written before the signal was answered. Requests sent after it
    # are refused or cut: a load balancer must stop sending first, which is what
    # the readiness probe and the preStop delay in deploy/kubernetes are for.
    assert set(before) == {"200"} and before["200"] > 100, dict(before)
    assert after["refused"] > 0  # and then it really was gone


def test_training_killed_midway_leaves_stores_as_they_were(bentoml_home, tmp_path, synthetic_files):
    files = synthetic_files["csv"]
    store = tmp_path / "feature_store"
    args = [
        sys.executable, "-m", "train", "--interactions", str(files["interactions"]), "--items", str(files["items"]),
        "--ranker-iterations", "60", "--backtest-cuts", "1", "--fold-iterations", "20", "--train-cuts", "2",
        "--feature-store", str(store), "--report-dir", str(tmp_path / "reports"),
    ]  # fmt: skip
    assert subprocess.run(args, cwd=REPO, capture_output=True).returncode == 0
    before = store_state(bentoml_home, store)
    for step in ("→ backtest", "→ secondary evaluation", "→ final ranker", "→ report"):
        process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith(step):
                process.kill()
                break
        assert process.wait() == -signal.SIGKILL, f"run ended before {step!r}"
        assert store_state(bentoml_home, store) == before, f"stores changed by a run killed at {step!r}"
    assert subprocess.run(args, cwd=REPO, capture_output=True).returncode == 0
    assert store_state(bentoml_home, store) != before
