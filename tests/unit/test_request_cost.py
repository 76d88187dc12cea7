"""benchmarks.request_cost: per-thread CPU read from /proc, and the worker process found under a server."""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404: starts this interpreter and sleep, fixed argv
import sys
import threading
import time

from benchmarks.request_cost import TICK_MS, thread_ticks, worker_pid
from benchmarks.servers import cmdline, process_tree


def test_thread_ticks_count_the_cpu_this_thread_spent_in_user_and_system_mode():
    me = threading.get_native_id()
    before, cpu_before = thread_ticks(os.getpid()), time.thread_time()
    busy_until = cpu_before + 0.4
    while time.thread_time() < busy_until:
        os.stat(__file__)  # system time as well as user time: both fields must be read
    after, spent_ms = thread_ticks(os.getpid()), (time.thread_time() - cpu_before) * 1000
    assert me in before and me in after
    assert abs((after[me] - before[me]) * TICK_MS - spent_ms) <= 3 * TICK_MS  # ticks are coarse


def test_the_worker_is_the_servers_bentoml_worker_child_or_the_server_itself():
    # A "server" whose child has a BentoML worker's module name on its command line, and one with no child.
    # It also has a child that is not a worker, started first: the command line is what tells them apart.
    child = "import time; time.sleep(30)"
    worker = f"[sys.executable, '-c', {child!r}, '_bentoml_impl.worker.service']"
    parent = f"import subprocess, sys; subprocess.Popen(['sleep', '30']); subprocess.run({worker})"
    server = subprocess.Popen([sys.executable, "-c", parent])  # nosec B603
    lone = subprocess.Popen(["sleep", "30"])  # nosec B603 B607
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (found,) = [p for p in process_tree(server.pid) if "worker" in (cmdline(p) or "")]
        assert worker_pid(server.pid) == found != server.pid
        assert worker_pid(lone.pid) == lone.pid
    finally:
        for pid in process_tree(server.pid):
            os.kill(pid, signal.SIGKILL)
        for process in (server, lone):
            process.kill()
            process.wait()
