"""The server process's own Prometheus directory (serving/startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bentoml._internal.configuration.containers import BentoMLContainer

from serving.startup import METRICS_DIR_PREFIX, own_metrics_dir


@pytest.fixture
def metrics_root(tmp_path):
    """BentoML's Prometheus directory pointed at a temporary one, restored after."""
    BentoMLContainer.prometheus_multiproc_dir.set(str(tmp_path / "prometheus_multiproc_dir"))
    yield tmp_path / "prometheus_multiproc_dir"
    BentoMLContainer.prometheus_multiproc_dir.reset()


def test_each_server_gets_its_own_directory_and_dead_servers_ones_are_removed(metrics_root):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = metrics_root / f"{METRICS_DIR_PREFIX}{finished.stdout.strip()}"
    running = metrics_root / f"{METRICS_DIR_PREFIX}{os.getppid()}"  # a live process: our parent
    for directory in (dead, running):
        directory.mkdir(parents=True)
        (directory / "counter_1.db").write_bytes(b"x")
    own = own_metrics_dir()
    assert own == metrics_root / f"{METRICS_DIR_PREFIX}{os.getpid()}"
    assert BentoMLContainer.prometheus_multiproc_dir.get() == str(own)  # what serve_http will empty and use
    assert not dead.exists() and (running / "counter_1.db").exists()
