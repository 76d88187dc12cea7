"""Probes on a port of their own, answered by a thread of their own: fast while the worker is saturated.

On the service port, ``/livez`` and ``/readyz`` wait their turn on the event
loop behind every request in flight, and the loop shares one GIL with the
pipeline thread: measured with one worker saturated, their p99 was 200-500 ms
(BENCHMARKS.md), over Kubernetes' default 1 s probe timeout at worse loads.
A probe should say whether the worker is alive, not how long its queue is.

:class:`HealthServer` listens on ``RECSYS_HEALTH_PORT`` in every worker
(``SO_REUSEPORT``: the kernel spreads probes over the workers) and answers from
a thread that needs the GIL for a few microseconds per probe. So that a fast
answer still means something, the event loop beats a heartbeat
(:meth:`HealthServer.beat`, from :func:`heartbeat`); when it is older than
``stale_after`` seconds the loop is stuck and both probes answer 503, which
lets Kubernetes restart the pod. ``/readyz`` also answers 503 until the
service has loaded its models and after it started to stop.

The port is for the kubelet only: it answers nothing but the two probes,
reads at most :data:`MAX_REQUEST_BYTES` per connection, gives a client
:data:`CLIENT_SECONDS` to send them, and serves :data:`MAX_CLIENTS`
connections at once (the next is closed at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
CLIENT_SECONDS = 2.0
MAX_CLIENTS = 16
BEAT_SECONDS = 0.5


class HealthServer:
    """``GET /livez`` and ``GET /readyz`` on their own socket and thread (one per worker)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], stale_after: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self.stale_after = stale_after
        self._last_beat = time.monotonic()
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()
        self.heartbeat_task: asyncio.Task | None = None

    def beat(self) -> None:
        """The event loop is alive now."""
        self._last_beat = time.monotonic()

    def start(self) -> None:
        """Bind (shared with the other workers) and answer probes from a daemon thread."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self._socket = sock
        threading.Thread(target=self._accept, name="recsys-health", daemon=True).start()
        logger.info("probes on %s:%d (/livez, /readyz)", self.host, self.port)

    def stop(self) -> None:
        """Stop accepting; probes fail from now on (the worker is going away)."""
        self._stopping.set()
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
        if self._socket is not None:
            self._socket.close()

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        """Status and JSON body for one probe request."""
        if path not in ("/livez", "/readyz"):
            return 404, {"status": "error", "error": "not_found", "message": "this port answers /livez and /readyz"}
        if method not in ("GET", "HEAD"):
            return 405, {"status": "error", "error": "method_not_allowed", "message": f"{method} not allowed"}
        age = time.monotonic() - self._last_beat
        state = {"event_loop_ms": round(age * 1000, 1)}
        if age > self.stale_after:
            message = f"the event loop has not run for {age:.1f} s (limit {self.stale_after:g} s)"
            return 503, {"status": "error", "error": "stalled", "message": message, **state}
        if path == "/readyz" and (self._stopping.is_set() or not self.ready()):
            return 503, {"status": "error", "error": "not_ready", "message": "models not loaded, or stopping", **state}
        return 200, {"status": "ok", **state}

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:  # closed by stop()
                return
            if not self._clients.acquire(blocking=False):
                conn.close()  # MAX_CLIENTS already being served: a kubelet never needs more
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CLIENT_SECONDS)
            request = _read_head(conn)
            if request is None:
                return
            method, _, rest = request.partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, body = self.answer(method, path)
            conn.sendall(_response(status, body, head_only=method == "HEAD"))
        except OSError:  # timed out or reset: nothing to answer
            pass
        finally:
            conn.close()
            self._clients.release()


def _read_head(conn: socket.socket) -> str | None:
    """The request line, once the headers are in (``None``: the client sent too much or nothing)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_BYTES:
            return None
        chunk = conn.recv(MAX_REQUEST_BYTES)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(status: int, body: dict, head_only: bool = False) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload


async def heartbeat(health: HealthServer) -> None:
    """Beat every :data:`BEAT_SECONDS` for as long as the event loop runs this task."""
    while True:
        health.beat()
        await asyncio.sleep(BEAT_SECONDS)


def start_probes(host: str, port: int | None, stale_after: float, ready: Callable[[], bool]) -> HealthServer | None:
    """Start the probe port and the loop's heartbeat (in the worker's event loop); ``None`` when no port is set."""
    if not port:
        return None
    health = HealthServer(host, port, ready, stale_after)
    health.start()
    health.heartbeat_task = asyncio.get_running_loop().create_task(heartbeat(health))  # keep a reference
    return health
