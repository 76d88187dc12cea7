"""Two trees served at once, one worker each; lone ``/recommend`` requests in alternating rounds.

    PYTHONPATH=. RECSYS_FEATURE_STORE=$PWD/feature_store python docs/bench/lone_request_cuts/cpu_ab.py \\
        4 10 '{"old": {"PYTHONPATH": "/tmp/old"}, "new": {"PYTHONPATH": "."}}' '{"old": "/tmp/old", "new": "."}'

Arguments: seconds per round, rounds, each server's extra environment, each server's working directory
(a worktree of the other commit). Each round loads one server, then the other, in an order that alternates;
a server's CPU per request is its worker's threads' CPU time (``/proc``) over the requests it answered.
"""

import json
import os
import statistics
import sys
from contextlib import ExitStack

import numpy as np

from benchmarks.request_cost import TICK_MS, send_for, thread_ticks, worker_pid
from benchmarks.servers import free_port
from benchmarks.serving import BIN, server
from serving.runtime import Runtime
from serving.settings import get_settings

os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": "1"})
runtime = Runtime.from_settings(get_settings())
users = np.random.default_rng(0).permutation(np.asarray(runtime.candidates.user_ids, dtype=str))
bodies = [{"user_id": str(u), "k": 10} for u in users]
seconds, rounds, envs = float(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
dirs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
results: dict[str, list[tuple[float, float]]] = {label: [] for label in envs}
with ExitStack() as stack:
    ports, pids = {}, {}
    for label, extra in envs.items():
        env = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_EVENT_LOG": "", "RECSYS_HEALTH_PORT": str(free_port()), **extra}
        port = free_port()
        command = [str(BIN / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1", "--port", str(port)]
        if label in dirs:
            command += ["--working-dir", dirs[label]]
        _, pid = stack.enter_context(server(command, port, env))
        ports[label], pids[label] = port, worker_pid(pid)
        send_for(port, "POST", "/recommend", bodies, 2.0)  # warm-up
    for round_ in range(rounds):
        for label in list(envs) if round_ % 2 == 0 else list(envs)[::-1]:
            before = thread_ticks(pids[label])
            sent, _ = send_for(ports[label], "POST", "/recommend", bodies, seconds)
            after = thread_ticks(pids[label])
            cpu = sum(after[tid] - before.get(tid, 0) for tid in after) * TICK_MS / sent
            results[label].append((sent / seconds, cpu))
            print(f"round {round_} {label}: {sent / seconds:.1f} req/s, {cpu:.3f} CPU ms per request", flush=True)
first, second = list(envs)
print("median CPU ms per request", {k: round(statistics.median(c for _, c in v), 4) for k, v in results.items()})
print("median requests/s", {k: round(statistics.median(q for q, _ in v), 1) for k, v in results.items()})
pairs = list(zip(results[first], results[second], strict=True))
print(f"CPU {second}/{first} per round:", [round(b[1] / a[1], 3) for a, b in pairs])
print(f"req/s {second}/{first} per round:", [round(b[0] / a[0], 3) for a, b in pairs])
