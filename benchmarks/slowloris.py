"""Slowloris against one worker: do normal requests still get through, and are the slow connections closed?

Measures ``/recommend`` latency at a few connections, then again while
``--connections`` slow clients each open a connection, send a partial
request line and one more header byte every ``--drip`` seconds. Reports both
latencies, how many slow connections the server closed and after how long
(the header timeout, ``RECSYS_HEADER_TIMEOUT_SECONDS``), and how many were
refused outright (the per-worker cap, ``RECSYS_MAX_CONNECTIONS``). Uses the
models in the BentoML store; traffic goes to 127.0.0.1 only::

    python -m benchmarks.slowloris --connections 500 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.loadgen import fixed_concurrency, markdown, recommend_bodies
from benchmarks.servers import free_port
from benchmarks.serving import BIN, server
from serving.runtime import Runtime
from serving.settings import get_settings


async def slow_connection(port: int, drip: float, until: float) -> tuple[str, float]:
    """One slowloris connection: a request line, then a header byte every ``drip`` seconds.

    Returns how it ended ("closed": the server answered 408 or hung up, "refused":
    503 or no connection, "held": still open at ``until``) and after how many seconds.
    """
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused", 0.0
    try:
        writer.write(b"POST /recommend HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() < until:
            writer.write(b"X")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(512), timeout=drip)
            except TimeoutError:
                continue  # still held open: drip again
            return ("refused" if answer.startswith(b"HTTP/1.1 503") else "closed"), time.monotonic() - started
        return "held", time.monotonic() - started
    except OSError:
        return "closed", time.monotonic() - started
    finally:
        writer.close()


async def attack(port: int, connections: int, drip: float, seconds: float) -> dict:
    """``connections`` slow clients for ``seconds``, each reconnecting as soon as it is closed."""
    until = time.monotonic() + seconds
    ends: dict[str, list[float]] = {"closed": [], "refused": [], "held": []}

    async def one() -> None:
        while time.monotonic() < until:
            how, after = await slow_connection(port, drip, until)
            ends[how].append(after)
            if how == "refused":
                await asyncio.sleep(drip)

    await asyncio.gather(*(one() for _ in range(connections)))
    closed = sorted(ends["closed"])
    return {
        "slow_connections": connections,
        "closed_by_server": len(closed),
        "closed_after_s_median": round(closed[len(closed) // 2], 1) if closed else None,
        "refused_503": len(ends["refused"]),
        "held_to_the_end": len(ends["held"]),
    }


async def under_attack(url: str, port: int, bodies: list[dict], args: argparse.Namespace) -> tuple[dict, dict]:
    task = asyncio.create_task(attack(port, args.connections, args.drip, args.seconds + 5))
    await asyncio.sleep(2)  # let the slow connections open
    load = await fixed_concurrency(f"{url}/recommend", bodies, args.concurrency, args.seconds)
    return load.summary(), await task


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--connections", type=int, default=500, help="slow connections")
    cli.add_argument("--drip", type=float, default=2.0, help="seconds between a slow client's header bytes")
    cli.add_argument("--seconds", type=float, default=15, help="seconds of measured load, before and during")
    cli.add_argument("--concurrency", type=int, default=4, help="normal clients")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    args = cli.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    runtime = Runtime.from_settings(get_settings())
    bodies = recommend_bodies([str(u) for u in runtime.candidates.user_ids], 5_000, seed=5)
    del runtime

    port = free_port()
    command = [str(BIN / "bentoml"), "serve", "service:Recommender", "--port", str(port), "--host", "127.0.0.1"]
    env = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_WORKERS": "1"}
    with server(command, port, env, args.out / "slowloris-bentoml.log") as (url, _):
        before = asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, args.concurrency, args.seconds)).summary()
        during, slow = asyncio.run(under_attack(url, port, bodies, args))
    before["label"], during["label"] = "before", f"during {args.connections} slow connections"
    report = {"before": before, "during": during, "slowloris": slow}
    print(markdown([before, during]))
    print(json.dumps(slow))
    (args.out / "slowloris.json").write_text(json.dumps(report, indent=2))
    return 0 if during["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
