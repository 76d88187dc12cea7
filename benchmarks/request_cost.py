"""What one request costs each thread of a worker: where a lone request's time goes.

Throughput and latency tables (``benchmarks.request_path``) say how fast; this
says why. One keep-alive connection sends requests back to back for a few
seconds per route, and the worker's threads' CPU time is read from
``/proc/<pid>/task/*/stat`` before and after, so each row splits a request's
cost between the event loop (BentoML, uvicorn, the edge, parsing,
serialising) and the other threads (the pipeline thread, which computes):

- ``GET /livez``: uvicorn and the middleware, no API;
- ``POST /feedback`` with the event log off: BentoML's API machinery around a
  handler that validates a small body and answers a small one (503: nothing
  to record to), a floor for any API: 1000 / its CPU bounds one worker's
  requests per second;
- ``POST /recommend``: a known user, k = 10; then with 10 recent items.

The same for the FastAPI reference (``benchmarks/fastapi_app.py``, the
pipeline on its event loop, no batching), and what the pipeline thread runs
for a request (``serving.responses.answer``) called in-process, no HTTP,
back to back, the two cases taking turns.

    python -m benchmarks.request_cost --seconds 5

Uses the models in the BentoML store (train first: ``python -m train``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.loadgen import markdown
from benchmarks.servers import free_port, worker_pids
from benchmarks.serving import BIN, fastapi_reference, server
from serving import heap
from serving.api_models import RecommendRequest
from serving.responses import answer
from serving.runtime import Runtime
from serving.settings import get_settings

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[int, int]:
    """CPU time (user + system, clock ticks) of each thread of a process."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return out


def worker_pid(server_pid: int) -> int:
    """The process that serves: BentoML's worker, or the server itself (uvicorn with one worker)."""
    workers = worker_pids(server_pid)
    return workers[0] if workers else server_pid


def send_for(
    port: int, method: str, path: str, bodies: list[dict | None], seconds: float, status: int = 200
) -> tuple[int, float]:
    """Requests back to back on one connection for ``seconds`` (each must answer ``status``); how many, how long."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        body = bodies[sent % len(bodies)]
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        response.read()
        if response.status != status:
            raise RuntimeError(f"{method} {path} answered {response.status}")
        sent += 1
    elapsed = time.perf_counter() - start
    connection.close()
    return sent, elapsed


def route_cost(
    port: int, pid: int, label: str, method: str, path: str, bodies: list, seconds: float, status: int = 200
) -> dict:
    """Wall ms per request on one connection and CPU ms per request: event loop, other threads."""
    send_for(port, method, path, bodies, 1.0, status)  # warm-up
    before = thread_ticks(pid)
    sent, elapsed = send_for(port, method, path, bodies, seconds, status)
    after = thread_ticks(pid)
    spent = {tid: (after[tid] - before.get(tid, 0)) * TICK_MS / sent for tid in after}
    loop_ms = spent.get(pid, 0.0)  # the main thread runs the event loop
    other_ms = sum(ms for tid, ms in spent.items() if tid != pid)
    return {
        "route": label,
        "wall_ms": round(elapsed * 1000 / sent, 3),
        "event_loop_cpu_ms": round(loop_ms, 3),
        "other_threads_cpu_ms": round(other_ms, 3),
        "cpu_ms": round(loop_ms + other_ms, 3),
        "requests": sent,
    }


def in_process(runtime: Runtime, cases: dict[str, list[RecommendRequest]]) -> dict[str, float]:
    """Thread CPU ms per call of what the service's pipeline thread runs for one request, per case.

    The cases take turns call by call, so a drift in the machine's speed hits
    them alike; turn ``i`` of one case and of the next are different users
    (the bodies are built for distinct users), so no call finds the previous
    call's user in cache.
    """
    spent = dict.fromkeys(cases, 0.0)
    for turn in range(min(len(requests) for requests in cases.values())):
        for name, requests in cases.items():
            start = time.thread_time()
            answer(runtime.pipeline, [requests[turn]], runtime.tags)
            spent[name] += time.thread_time() - start
    return {name: total * 1000 / min(len(r) for r in cases.values()) for name, total in spent.items()}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--seconds", type=float, default=5, help="per route")
    cli.add_argument("--out", type=Path, help="also write the rows here (JSON)")
    args = cli.parse_args(argv)
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": "1"})
    threadpool_limits(1)
    runtime = Runtime.from_settings(get_settings())
    heap.settle()
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.permutation(np.asarray(runtime.candidates.user_ids, dtype=str))]  # each once
    items = np.asarray(runtime.candidates.item_ids, dtype=str)
    plain = [{"user_id": u, "k": 10} for u in users]
    fresh = [{**b, "recent_items": [str(i) for i in rng.choice(items, 10, replace=False)]} for b in plain]
    routes = [
        ("GET /livez", "GET", "/livez", [None], 200),
        ("POST /feedback (log off: 503)", "POST", "/feedback", [{"user_id": u, "item_id": "1"} for u in users], 503),
        ("POST /recommend", "POST", "/recommend", plain, 200),
        ("POST /recommend, 10 recent items", "POST", "/recommend", fresh, 200),
    ]
    rows = []
    env = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_EVENT_LOG": "", "RECSYS_HEALTH_PORT": str(free_port())}
    port = free_port()
    bento = [str(BIN / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1", "--port", str(port)]
    with server(bento, port, env) as (_, pid):
        worker = worker_pid(pid)
        rows += [
            {"server": "bentoml", **route_cost(port, worker, label, method, path, bodies, args.seconds, status)}
            for label, method, path, bodies, status in routes
        ]
    port = free_port()
    uvicorn = fastapi_reference(port)
    with server(uvicorn, port) as (_, pid):
        worker = worker_pid(pid)
        rows += [
            {"server": "fastapi", **route_cost(port, worker, label, method, path, bodies, args.seconds, status)}
            for label, method, path, bodies, status in routes
            if path != "/feedback"
        ]
    half = len(plain) // 2  # plain and fresh calls alternate, each on users of its own
    cases = {
        "answer(), one request a call": [RecommendRequest.model_validate(b) for b in plain[:half]],
        "answer(), 10 recent items": [RecommendRequest.model_validate(b) for b in fresh[half:]],
    }
    for label, cpu in in_process(runtime, cases).items():
        rows.append({"server": "in-process", "route": label, "cpu_ms": round(cpu, 3), "requests": half})
    print(markdown(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
