"""benchmarks.request_cost: per-thread CPU read from /proc, and the worker process found under a server."""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404: starts this interpreter and sleep, fixed argv
import sys
import threading
import time

from benchmarks.request_cost import TICK_MS, thread_ticks, worker_pid
from benchmarks.servers import process_tree


def test_thread_ticks_count_the_cpu_this_thread_spent():
    me = threading.get_native_id()
    before = thread_ticks(os.getpid())
    busy_until = time.thread_time() + 0.3
    while time.thread_time() < busy_until:
        pass
    after = thread_ticks(os.getpid())
    assert me in before and me in after
    assert (after[me] - before[me]) * TICK_MS >= 200  # 300 ms spent; ticks are 10 ms coarse


def test_the_worker_is_the_servers_bentoml_worker_child_or_the_server_itself():
    # A "server" whose child has a BentoML worker's module name on its command line, and one with no child.
    child = "import time; time.sleep(30)"
    parent = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}, '_bentoml_impl.worker.service'])"
    )
    server = subprocess.Popen([sys.executable, "-c", parent])  # nosec B603
    lone = subprocess.Popen(["sleep", "30"])  # nosec B603 B607
    try:
        deadline = time.monotonic() + 10
        while not process_tree(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = process_tree(server.pid)
        assert worker_pid(server.pid) == worker != server.pid
        assert worker_pid(lone.pid) == lone.pid
    finally:
        for pid in process_tree(server.pid):
            os.kill(pid, signal.SIGKILL)
        for process in (server, lone):
            process.kill()
            process.wait()
