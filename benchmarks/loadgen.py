"""A small asyncio load generator for 127.0.0.1 (aiohttp, which BentoML already ships).

Two modes: a fixed arrival rate (open loop: latency at a given load) and a
fixed number of connections each sending back to back (closed loop:
saturation throughput). Every run is bounded in time and count.

Python's cyclic garbage collector is off while a load runs (:func:`no_gc_pauses`): the generator
keeps every request's task and latency, and a full collection over them stopped its event loop for
100-140 ms about 40 s into a 200 requests/s run. The answer it was waiting for looked 100 ms slow,
and the requests it then sent at once looked 25-40 ms slow: a p99 of 17.9 ms charged to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import re
import shutil
import subprocess  # nosec B404
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from benchmarks.servers import process_tree, status_field


@dataclass
class LoadResult:
    """Latencies in milliseconds and what failed."""

    label: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rss_mb_start: float | None = None
    rss_mb_end: float | None = None

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "label": self.label,
            "requests": self.ok + self.n_errors,
            "errors": self.n_errors,
            "rps": round(self.ok / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "rss_mb_start": self.rss_mb_start,
            "rss_mb_end": self.rss_mb_end,
        }


def process_tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants (BentoML forks workers)."""
    kib = 0
    for pid in [root_pid, *process_tree(root_pid)]:
        rss = status_field(pid, "VmRSS")  # "123456 kB"
        kib += int(rss.split()[0]) if rss else 0
    return round(kib / 1024, 1)


def recommend_bodies(users: list[str], n: int, seed: int = 0, unknown_share: float = 0.1) -> list[dict]:
    """Request bodies: mostly known users, some unknown ones (cold start)."""
    # B311 (bandit): picks benchmark users, nothing secret
    rng = random.Random(seed)  # nosec B311
    return [{"user_id": f"new-{i}" if rng.random() < unknown_share else rng.choice(users), "k": 10} for i in range(n)]


async def _send(session, url, body, result: LoadResult) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            await response.read()
            if response.status == 200:
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
            else:
                result.errors[str(response.status)] = result.errors.get(str(response.status), 0) + 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The cyclic collector off for a load's length (see the module docstring), collected before and after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def fixed_rate(url: str, bodies: list[dict], rate: float, seconds: float, label: str = "") -> LoadResult:
    """Open loop: one request every 1/rate seconds whatever the server does."""
    result = LoadResult(label or f"{rate:.0f} req/s", seconds)
    connector = aiohttp.TCPConnector(limit=512)
    with no_gc_pauses():
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            tasks, start = [], time.perf_counter()
            for i in range(int(rate * seconds)):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_send(session, url, bodies[i % len(bodies)], result)))
            await asyncio.gather(*tasks)
            result.seconds = time.perf_counter() - start
    return result


async def fixed_concurrency(url: str, bodies: list[dict], concurrency: int, seconds: float) -> LoadResult:
    """Closed loop: ``concurrency`` connections, each sending as soon as it has an answer."""
    result = LoadResult(f"{concurrency} connections", seconds)
    connector = aiohttp.TCPConnector(limit=concurrency)
    with no_gc_pauses():
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            deadline = time.perf_counter() + seconds
            start = time.perf_counter()

            async def worker(offset: int) -> None:
                i = offset
                while time.perf_counter() < deadline:
                    await _send(session, url, bodies[i % len(bodies)], result)
                    i += concurrency

            await asyncio.gather(*(worker(c) for c in range(concurrency)))
            result.seconds = time.perf_counter() - start
    return result


HEY_PERCENTILE = re.compile(r"^\s*(50|95|99)% in ([0-9.]+) secs")
HEY_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses")
HEY_ERROR = re.compile(r"^\s*\[(\d+)\]\s+\D")  # "Error distribution:" lines: "[3]	Post ...: EOF"


def hey(url: str, body: dict, concurrency: int, seconds: float) -> dict:
    """Closed loop with ``hey`` (Debian's package, a Go client): one body, ``concurrency`` connections.

    A second opinion on the asyncio generator above, whose own cost is Python's: ``hey`` spends less per
    request, so a server's share of the machine is larger under it. The row has :meth:`LoadResult.summary`'s
    keys: ``rps`` counts answers with status 200 only (hey's own rate counts every status), ``errors`` the
    rest and the transport errors; hey's percentiles are over every answer. Requires ``hey`` on PATH.
    """
    binary = shutil.which("hey")
    if binary is None:
        raise SystemExit("hey is not installed (apt-get install hey)")
    command = [binary, "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    # B603 (bandit): a fixed binary and arguments, no shell
    out = subprocess.run(  # nosec B603
        [*command, "-d", json.dumps(body), url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    statuses: dict[str, int] = {}
    percentiles: dict[str, float] = {}
    transport_errors = 0
    for line in out.splitlines():
        if status := HEY_STATUS.match(line):
            statuses[status.group(1)] = int(status.group(2))
        elif percentile := HEY_PERCENTILE.match(line):
            percentiles[percentile.group(1)] = round(float(percentile.group(2)) * 1000, 2)
        elif error := HEY_ERROR.match(line):
            transport_errors += int(error.group(1))
    ok = statuses.get("200", 0)
    errors = sum(statuses.values()) - ok + transport_errors
    return {
        "label": f"{concurrency} connections (hey)",
        "requests": ok + errors,
        "errors": errors,
        "rps": round(ok / seconds, 1),
        "p50_ms": percentiles.get("50"),
        "p95_ms": percentiles.get("95"),
        "p99_ms": percentiles.get("99"),
    }


def markdown(rows: list[dict]) -> str:
    """Rows of summaries as a Markdown table (the first row's columns; a missing or None cell left blank)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
