"""What an online experiment costs the server, and whether changing it under load fails a request.

Three servers run side by side, one worker each, on the synthetic data of
``benchmarks.experiment_loop`` (its ``--work``: two pairs as strong as each
other, ``strong`` and ``peer``, trained there once), event log on:

- ``one arm``: no experiment;
- ``two arms``: half the users on ``strong``, half on ``peer``;
- ``shadow 10%``: every user on ``strong``, and ``peer`` scoring 10% of requests as a shadow.

Measured, the servers taking turns round by round so a drift in the
machine's speed hits them alike:

- CPU per ``/recommend`` of the worker and its children (the shadow's
  process included, started and loaded before the first round); one
  connection, back to back, many users;
- p50/p99 at a fixed rate on ``one arm`` and ``shadow 10%``, the rate that
  keeps one-arm's worker ``--load`` busy (from its CPU per request): is the
  shown answer's p99 within run-to-run noise;
- PSS and private memory of each worker and its children after the load:
  what an extra arm holds, and what a shadow's process does;
- under load (``--concurrency`` connections) on ``two arms``, the file
  rewritten every few seconds (weights 1:1, 1:3, 0:1, the file removed,
  1:1 again): requests that failed (none allowed) and the seconds until
  answers followed each change (one refresh period is ``REFRESH``).

    python -m benchmarks.experiment_cost --out docs/bench/experiment_cost/result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from benchmarks.experiment_loop import data_config, env_of, trained
from benchmarks.loadgen import fixed_rate, recommend_bodies
from benchmarks.request_cost import TICK_MS, send_for, thread_ticks, worker_pid
from benchmarks.servers import PROC, process_tree, recommender
from benchmarks.serving import REPO
from benchmarks.serving_memory import smaps

REFRESH = 1.0  # seconds: RECSYS_REFRESH_SECONDS of every server here


def specs(strong: str, peer: str) -> dict[str, dict | None]:
    return {
        "one arm": None,
        "two arms": split(1, 1, peer),
        # An experiment has two arms or more: the second gets no users (weight 0) and is the served pair too.
        "shadow 10%": {"name": "cost", "arms": [{"name": "control", "weight": 1}, {"name": "idle", "weight": 0}],
                       "shadow": {"name": "peer", "ranker": peer, "share": 0.1}},
    }  # fmt: skip


def split(control: float, peer: float, ranker: str) -> dict:
    """Two arms by weight: the served pair and the ``peer`` ranker."""
    return {"name": "cost", "arms": [{"name": "control", "weight": control},
                                     {"name": "peer", "weight": peer, "ranker": ranker}]}  # fmt: skip


def write(path: Path, spec: dict) -> None:
    """The file replaced whole, as docs/experiments.md says to: a poll never reads half of it."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(spec))
    os.replace(partial, path)


def changes_under_load(url: str, spec: Path, peer: str, users: list[str], connections: int, hold: float) -> dict:
    """Rewrite the file under load; failed requests, and seconds until answers followed each change."""
    stop, lock = threading.Event(), threading.Lock()
    seen: list[tuple[float, str]] = []  # (time, the arm's share of users or "none") of each answer
    failures: list[str] = []

    def load(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = offset
            while not stop.is_set():
                user = users[n % len(users)]
                n += connections
                try:
                    response = client.post("/recommend", json={"user_id": user, "k": 10})
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                arm = response.json().get("experiment")
                state = "none" if arm is None else f"{arm['arm']}:{arm['share']}"
                with lock:
                    seen.append((time.monotonic(), state))

    steps = [("1:3", split(1, 3, peer), "peer:0.75"), ("0:1", split(0, 1, peer), "peer:1.0"),
             ("ended", None, "none"), ("1:1", split(1, 1, peer), "peer:0.5")]  # fmt: skip
    threads = [threading.Thread(target=load, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(hold)
    took = {}
    # B311 (bandit): a delay, nothing secret. Each change lands at another point of the poll's period.
    jitter = random.Random(5)  # nosec B311
    for label, body, expected in steps:
        changed = time.monotonic()
        if body is None:
            spec.unlink()
        else:
            write(spec, body)
        time.sleep(hold + jitter.uniform(0, REFRESH))
        with lock:
            after = [t for t, state in seen if t > changed and state == expected]
        took[label] = round(after[0] - changed, 2) if after else None
    stop.set()
    for thread in threads:
        thread.join()
    return {"requests": len(seen) + len(failures), "failed": len(failures), "first_failures": failures[:5],
            "seconds_to_take_effect": took, "refresh_seconds": REFRESH}  # fmt: skip


def tree_ticks(pid: int) -> int:
    """CPU clock ticks (user + system) of a process and its children: a worker and its shadow process."""
    return sum(sum(thread_ticks(p).values()) for p in [pid, *process_tree(pid)] if (PROC / str(p)).exists())


def cpu_per_request(port: int, worker: int, bodies: list[dict], seconds: float) -> float:
    """CPU ms per ``/recommend`` of a worker and its children, one connection back to back for ``seconds``."""
    before = tree_ticks(worker)
    sent, _ = send_for(port, "POST", "/recommend", bodies, seconds)
    time.sleep(0.5)  # the shadow's last gathered requests scored
    return round((tree_ticks(worker) - before) * TICK_MS / sent, 3)


def tree_memory(worker: int) -> dict[str, float]:
    """PSS and private MB of a worker and its children (the shadow's process, when one runs)."""
    parts = [smaps(p) for p in [worker, *process_tree(worker)]]
    return {key: round(sum(part.get(key, 0.0) for part in parts), 1) for key in ("rss_mb", "pss_mb", "private_mb")}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, default=3000, help="the synthetic data's users (as experiment_loop)")
    cli.add_argument("--work", type=Path, default=Path("var/experiment_loop"), help="experiment_loop's --work")
    cli.add_argument("--rounds", type=int, default=3, help="turns of the CPU measurement per server")
    cli.add_argument("--seconds", type=float, default=6.0, help="per CPU measurement, and per fixed-rate run")
    cli.add_argument("--load", type=float, default=0.5, help="latency runs' rate, as a share of one worker's capacity")
    cli.add_argument("--concurrency", type=int, default=8, help="connections while the file changes")
    cli.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = cli.parse_args(argv)
    if args.users < 600 or args.rounds < 1 or args.seconds <= 0 or not 0 < args.load < 1 or args.concurrency < 1:
        message = "--users at least 600; --rounds, --seconds, --concurrency above 0; --load in (0, 1)"
        print(f"error: {message}", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    tags = trained(args.work, args.users, ("strong", "peer"))
    users = [f"u{n}" for n in range(data_config(args.users).n_users)]
    bodies = recommend_bodies(users, 5000, seed=4)
    servers = {}
    with ExitStack() as stack:
        for name, spec in specs(tags["strong"], tags["peer"]).items():
            events = args.work / f"cost-events-{name.split()[0]}-{int(time.time())}"
            env = {**env_of(args.work), "RECSYS_RANKER_TAG": tags["strong"], "RECSYS_WORKERS": "1",
                   "RECSYS_FEATURE_STORE": str(args.work / "features-strong"), "RECSYS_EVENT_LOG": str(events),
                   "RECSYS_REFRESH_SECONDS": str(REFRESH)}  # fmt: skip
            if spec is not None:
                path = args.work / f"cost-{name.split()[0]}.json"
                write(path, spec)
                env["RECSYS_EXPERIMENTS"] = str(path)
            url, pid = stack.enter_context(recommender(env, args.work / f"cost-{name.split()[0]}.log", REPO))
            port = int(url.rsplit(":", 1)[1])
            servers[name] = {"url": url, "port": port, "worker": worker_pid(pid), "spec": env.get("RECSYS_EXPERIMENTS")}
        print(f"servers up: {', '.join(servers)}", flush=True)
        for s in servers.values():  # every worker warm, and the shadow's process started and loaded
            send_for(s["port"], "POST", "/recommend", bodies, 3.0)
        shadow_worker = servers["shadow 10%"]["worker"]
        deadline = time.monotonic() + 120
        while not process_tree(shadow_worker) and time.monotonic() < deadline:
            send_for(servers["shadow 10%"]["port"], "POST", "/recommend", bodies, 1.0)
        time.sleep(20)  # the shadow process loads its ranker once

        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(args.rounds):
            for name, s in servers.items():
                cpu[name].append(cpu_per_request(s["port"], s["worker"], bodies, args.seconds))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {v[-1]:.3f} ms" for n, v in cpu.items()), flush=True)
        median = {name: statistics.median(values) for name, values in cpu.items()}

        rate = round(args.load * 1000 / median["one arm"])  # requests/s that keep one-arm's worker this busy
        latency = []
        for round_ in range(args.rounds):
            for name in ("one arm", "shadow 10%"):
                result = asyncio.run(fixed_rate(f"{servers[name]['url']}/recommend", bodies, rate, args.seconds))
                latency.append({"server": name, "round": round_ + 1, **result.summary()})
                print(f"{name} at {rate} req/s: {latency[-1]}", flush=True)
        dropped = _metric(servers["shadow 10%"]["url"], "recsys_shadow_dropped_total")

        memory = {name: tree_memory(s["worker"]) for name, s in servers.items()}
        two = servers["two arms"]
        file = Path(two["spec"])
        under_load = changes_under_load(two["url"], file, tags["peer"], users, args.concurrency, 4 * REFRESH)
        print(f"file changed under load: {under_load}", flush=True)

    result = {
        "rankers": tags,
        "cpu_ms_per_request": cpu,
        "cpu_median_ms": median,
        "two_arms_over_one": round(median["two arms"] / median["one arm"], 3),
        "shadow_over_one": round(median["shadow 10%"] / median["one arm"], 3),
        "latency_rate": rate,
        "latency_at_rate": latency,
        "p99_ms": {name: [row["p99_ms"] for row in latency if row["server"] == name] for name in servers},
        "shadow_dropped": dropped,
        "worker_memory_mb": memory,
        "extra_arm_pss_mb": round(memory["two arms"]["pss_mb"] - memory["one arm"]["pss_mb"], 1),
        "extra_arm_private_mb": round(memory["two arms"]["private_mb"] - memory["one arm"]["private_mb"], 1),
        "changes_under_load": under_load,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("latency_at_rate", "cpu_ms_per_request")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if under_load["failed"] == 0 else 1


def _metric(url: str, name: str) -> float:
    """A counter's value summed over its samples on ``/metrics`` (0 when absent)."""
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


if __name__ == "__main__":
    sys.exit(main())
