"""benchmarks.request_cost reads per-thread CPU from /proc: check it sees this thread's work."""

from __future__ import annotations

import os
import threading
import time

from benchmarks.request_cost import TICK_MS, thread_ticks, worker_pid


def test_thread_ticks_count_the_cpu_this_thread_spent():
    me = threading.get_native_id()
    before = thread_ticks(os.getpid())
    busy_until = time.thread_time() + 0.3
    while time.thread_time() < busy_until:
        pass
    after = thread_ticks(os.getpid())
    assert me in before and me in after
    assert (after[me] - before[me]) * TICK_MS >= 200  # 300 ms spent; ticks are 10 ms coarse


def test_a_server_without_bentoml_workers_is_its_own_worker():
    assert worker_pid(os.getpid()) == os.getpid()
