"""Event log durability: feedback sent under load, then the server stopped by SIGTERM or killed by SIGKILL.

Prints, per signal, the events the server acknowledged (200) and the events
found in the log afterwards. SIGTERM must lose none (the workers flush at
shutdown); SIGKILL loses what was buffered since the last flush, at most
``RECSYS_EVENT_FLUSH_SECONDS`` (or ``..._ROWS``) worth.

Uses the models in the BentoML store (train first). Traffic goes to 127.0.0.1 only.

    python -m benchmarks.event_log --seconds 8
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.servers import free_port, running
from features.events import FEEDBACK, read_events

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _send(url: str, stop: threading.Event, acknowledged: list[int], batch: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        n = 0
        while not stop.is_set():
            events = [
                {"user_id": "bench", "item_id": str(1 + (n + i) % 1000), "timestamp": n + i} for i in range(batch)
            ]
            try:
                if http.post("/feedback", json={"events": events}).status_code == 200:
                    acknowledged.append(batch)
            except httpx.HTTPError:
                return  # the server is gone
            n += batch


def run(sig: signal.Signals, seconds: float, flush_seconds: float, batch: int, workers: int) -> dict:
    """Send for ``seconds``, then deliver ``sig`` to the server's process group while still sending."""
    log = Path(tempfile.mkdtemp(prefix="recsys-events-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "RECSYS_EVENT_LOG": str(log),
        "RECSYS_EVENT_FLUSH_SECONDS": str(flush_seconds),
        "RECSYS_WORKERS": str(workers),
        "RECSYS_REFRESH_SECONDS": "0",
    }
    command = [str(BIN / "bentoml"), "serve", "service:Recommender", "--port", str(port)]
    acknowledged: list[int] = []
    stop = threading.Event()
    with running(command, lambda: _ready(url), REPO, env) as process:
        sender = threading.Thread(target=_send, args=(url, stop, acknowledged, batch))
        sender.start()
        time.sleep(seconds)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)
        stop.set()
        sender.join()
    logged = read_events(str(log), FEEDBACK).num_rows
    sent = sum(acknowledged)
    return {"signal": sig.name, "acknowledged": sent, "logged": logged, "lost": sent - logged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="feedback load before the signal")
    parser.add_argument("--flush-seconds", type=float, default=5.0, help="RECSYS_EVENT_FLUSH_SECONDS")
    parser.add_argument("--batch", type=int, default=10, help="events per /feedback call")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print("| signal | events acknowledged | events in the log | lost |\n|---|---:|---:|---:|")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        result = run(sig, args.seconds, args.flush_seconds, args.batch, args.workers)
        print(f"| {result['signal']} | {result['acknowledged']:,} | {result['logged']:,} | {result['lost']:,} |")


if __name__ == "__main__":
    main()
