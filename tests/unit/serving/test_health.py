"""The probe port: its answers, the stuck-loop check, and what it does with clients that are not a kubelet."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from benchmarks.servers import free_port
from serving import health
from serving.health import HealthServer, start_probes


@pytest.fixture
def probes():
    server = HealthServer("127.0.0.1", free_port(), ready=lambda: True, stale_after=30.0)
    server.start()
    yield server
    server.stop()


def _ask(server: HealthServer, request: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body else {}


def test_both_probes_answer_ok_with_the_loops_last_beat(probes):
    probes.beat()
    for path in (b"/livez", b"/readyz"):
        status, body = _ask(probes, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        assert body["status"] == "ok"
        assert 0 <= body["event_loop_ms"] < 5_000


def test_a_stuck_event_loop_fails_both_probes(probes, monkeypatch):
    probes.beat()
    later = time.monotonic() + 31
    monkeypatch.setattr(health.time, "monotonic", lambda: later)
    status, body = _ask(probes, b"GET /livez HTTP/1.1\r\n\r\n")
    assert status == 503
    assert body["error"] == "stalled"
    assert body["message"].startswith("the event loop has not run for 31.")
    assert _ask(probes, b"GET /readyz HTTP/1.1\r\n\r\n")[0] == 503


def test_readiness_follows_the_service_and_fails_once_stopping():
    ready = [False]
    server = HealthServer("127.0.0.1", 0, ready=lambda: ready[0])
    assert server.answer("GET", "/readyz")[0] == 503
    assert server.answer("GET", "/livez")[0] == 200  # alive, not ready yet
    ready[0] = True
    assert server.answer("GET", "/readyz") == (200, {"status": "ok", "event_loop_ms": pytest.approx(0, abs=1000)})
    server.stop()
    status, body = server.answer("GET", "/readyz")
    assert (status, body["error"]) == (503, "not_ready")


def test_other_paths_and_methods_are_refused(probes):
    status, body = _ask(probes, b"GET /recommend HTTP/1.1\r\n\r\n")
    assert (status, body["error"]) == (404, "not_found")
    status, body = _ask(probes, b"POST /livez HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert _ask(probes, b"GET /livez?verbose=1 HTTP/1.1\r\n\r\n")[0] == 200


def test_head_gets_the_status_without_a_body(probes):
    with socket.create_connection(("127.0.0.1", probes.port), timeout=5) as sock:
        sock.sendall(b"HEAD /livez HTTP/1.1\r\n\r\n")
        data = sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n")


def test_oversized_or_silent_clients_are_dropped_and_probes_still_answer(probes, monkeypatch):
    monkeypatch.setattr(health, "CLIENT_SECONDS", 0.2)
    with socket.create_connection(("127.0.0.1", probes.port), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * (health.MAX_REQUEST_BYTES + 10))
        assert sock.recv(4096) == b""  # closed without an answer
    silent = [socket.create_connection(("127.0.0.1", probes.port)) for _ in range(health.MAX_CLIENTS + 4)]
    try:
        time.sleep(0.5)  # the silent ones time out
        assert _ask(probes, b"GET /livez HTTP/1.1\r\n\r\n")[0] == 200
    finally:
        for sock in silent:
            sock.close()


def test_no_port_means_no_probe_server():
    assert asyncio.run(_start(None)) is None


def test_start_probes_beats_from_the_running_loop():
    async def scenario() -> float:
        server = await _start(free_port())
        try:
            server._last_beat = 0.0
            await asyncio.sleep(0.05)  # the heartbeat task runs
            return server._last_beat
        finally:
            server.stop()

    assert asyncio.run(scenario()) > 0.0


async def _start(port: int | None) -> HealthServer | None:
    return start_probes("127.0.0.1", port, 30.0, ready=lambda: True)
