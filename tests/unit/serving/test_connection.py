"""The connection guard on uvicorn's own httptools protocol, with a fake transport: no sockets."""

from __future__ import annotations

import asyncio
import json

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.connection import ConnectionGuard, ConnectionLimits, ignore_upgrade, raw_response


class FakeTransport:
    def __init__(self) -> None:
        self.written, self.closed, self.eof = b"", False, False
        self.after_eof = 0  # writes after write_eof(): asyncio raises there, in whatever task wrote

    def write(self, data: bytes) -> None:
        if self.eof:
            self.after_eof += 1
            return
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 3000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope, receive, send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def closing_app(scope, receive, send) -> None:
    """Answers 413 without reading the body and closes the connection, as the edge does."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 413, "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"too large"})


def protocol(limits: ConnectionLimits, state: ServerState | None = None, asgi=app):
    guarded = type("Guarded", (ConnectionGuard, HttpToolsProtocol), {"limits": limits})
    config = Config(app=asgi, log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    return guarded(config=config, server_state=state or ServerState(), app_state={}, _loop=loop), loop


def test_oversized_headers_are_cut_off_with_431_and_a_lingering_close():
    # The 431, then a FIN; the rest is read and dropped (a client still sending reads the 431, not a reset)
    # up to max_drain_bytes, then the connection is closed.
    proto, loop = protocol(ConnectionLimits(max_header_bytes=1024, max_drain_bytes=4096))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(4):
        if not transport.eof:
            proto.data_received(b"a" * 512)
    assert transport.eof and not transport.closed and transport.written.startswith(b"HTTP/1.1 431")
    for _ in range(8):
        proto.data_received(b"a" * 512)
    assert not transport.closed
    proto.data_received(b"a" * 512)
    assert transport.closed and transport.written.count(b"HTTP/1.1") == 1
    loop.close()


def closing_connection(limits: ConnectionLimits, data: bytes):
    """A connection to :func:`closing_app` that has received ``data``."""
    proto, loop = protocol(limits, asgi=closing_app)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(data)
    return proto, loop, transport


HUGE = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n"  # a 3 MB body declared


def test_an_answer_that_closes_before_its_body_arrived_lingers_until_the_client_is_done():
    limits = ConnectionLimits(header_timeout_seconds=0.05, max_linger_bytes=50_000)
    proto, loop, transport = closing_connection(limits, HUGE + b"a" * 1000)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.startswith(b"HTTP/1.1 413") and transport.eof and not transport.closed
    proto.data_received(b"POST /next HTTP/1.1\r\n\r\n" + b"a" * 40_000)  # dropped, never parsed
    assert transport.written.count(b"HTTP/1.1") == 1 and not transport.closed and transport.after_eof == 0
    loop.run_until_complete(asyncio.sleep(0.1))  # the header timeout bounds the wait
    assert transport.closed
    loop.close()


def test_a_lingering_close_waits_out_the_header_timeout_not_the_idle_one():
    limits = ConnectionLimits(header_timeout_seconds=0.3, idle_timeout_seconds=0.05)
    _, loop, transport = closing_connection(limits, HUGE)
    loop.run_until_complete(asyncio.sleep(0.15))
    assert transport.eof and not transport.closed  # uvicorn's keep-alive timer is not armed on a closing one
    loop.run_until_complete(asyncio.sleep(0.3))
    assert transport.closed
    loop.close()


def test_a_pipelined_request_behind_a_closing_answer_is_not_started():
    # A is answered with `connection: close` while B's headers are in and its body still arriving: the close
    # lingers, and B, which uvicorn would start next, writing after the FIN, is not started.
    _, loop, transport = closing_connection(
        ConnectionLimits(),
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10,
    )
    loop.run_until_complete(asyncio.sleep(0.05))
    assert transport.written.count(b"HTTP/1.1") == 1 and transport.eof and transport.after_eof == 0
    loop.close()


def test_a_lingering_close_ends_past_its_byte_budget():
    proto, loop, transport = closing_connection(ConnectionLimits(max_linger_bytes=50_000), HUGE)
    loop.run_until_complete(asyncio.sleep(0.01))
    proto.data_received(b"a" * 50_000)
    assert transport.eof and not transport.closed
    proto.data_received(b"a")
    assert transport.closed
    loop.close()


def test_an_answer_that_closes_after_the_whole_request_closes_at_once():
    _, loop, transport = closing_connection(
        ConnectionLimits(), b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    )
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.startswith(b"HTTP/1.1 413") and transport.closed and not transport.eof
    loop.close()


def test_the_rest_of_a_body_answered_early_is_not_counted_as_the_next_requests_headers():
    # The app answers without reading the body (as the edge does with a 404 or 415); the client then sends
    # that 40 KB body and a next request on the same connection: both answered, no 431.
    proto, loop = protocol(ConnectionLimits(max_header_bytes=1024))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 40000\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.count(b"HTTP/1.1 200") == 1
    for _ in range(40):
        proto.data_received(b"a" * 1000)
    proto.data_received(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert b"431" not in transport.written and not transport.closed
    assert transport.written.count(b"HTTP/1.1 200") == 2
    # ... and headers that never end are still cut off on that connection.
    proto.data_received(b"GET /livez HTTP/1.1\r\nX-Big: ")
    for _ in range(4):
        if not transport.eof:
            proto.data_received(b"a" * 512)
    assert transport.eof and b"HTTP/1.1 431" in transport.written
    loop.close()


EARLY = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100000000\r\n\r\n"


def answered_early(limits: ConnectionLimits):
    """A connection whose request (a 100 MB body declared) was answered before any of its body came."""
    proto, loop = protocol(limits)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(EARLY)
    loop.run_until_complete(asyncio.sleep(0.01))
    return proto, loop, transport


def test_the_rest_of_a_body_answered_early_is_read_only_up_to_a_bound():
    limits = ConnectionLimits(max_header_bytes=1024, max_drain_bytes=10_000, max_linger_bytes=5_000)
    proto, loop, transport = answered_early(limits)
    for _ in range(20):
        if not transport.closed:
            proto.data_received(b"a" * 1000)
    # Answered; past the drain bound a lingering close (a FIN, 5,000 bytes more read), then cut off.
    assert transport.eof and transport.closed and transport.written.count(b"HTTP/1.1 200") == 1
    loop.close()


def test_a_body_answered_early_that_stops_arriving_gets_the_header_timeout():
    proto, loop, transport = answered_early(ConnectionLimits(header_timeout_seconds=0.05))
    proto.data_received(b"a" * 100)  # a trickle, then nothing
    loop.run_until_complete(asyncio.sleep(0.1))
    assert transport.closed and b"HTTP/1.1 408" in transport.written
    loop.close()


def test_connections_over_the_cap_get_503():
    state = ServerState()
    limits = ConnectionLimits(max_connections=2)
    transports, loops = [], []
    for _ in range(3):
        proto, loop = protocol(limits, state)
        loops.append(loop)
        transports.append(FakeTransport())
        proto.connection_made(transports[-1])
    assert [t.closed for t in transports] == [False, False, True]
    assert transports[-1].written.startswith(b"HTTP/1.1 503")
    for loop in loops:
        loop.close()


def test_slow_headers_get_408_when_the_timer_fires():
    proto, loop = protocol(ConnectionLimits(header_timeout_seconds=0.05))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"POST /recommend HTTP/1.1\r\nHost")
    loop.run_until_complete(asyncio.sleep(0.1))
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408")
    loop.close()


def test_upgrade_header_is_renamed_only_in_the_header_section():
    data = b"POST / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n{\r\nupgrade: 1}"
    assert ignore_upgrade(data) == b"POST / HTTP/1.1\r\nx-ignored-upgrade: h2c\r\n\r\n{\r\nupgrade: 1}"


def test_raw_response_is_the_envelope():
    head, _, body = raw_response(408, "Request Timeout", "too slow").partition(b"\r\n\r\n")
    assert b"connection: close" in head and json.loads(body) == {
        "status": "error",
        "error": "request_timeout",
        "message": "too slow",
    }
