"""Connection-level limits, below the ASGI edge: header size and time, idle time, open connections.

uvicorn with httptools (what BentoML's workers run) has no header size limit
and no header timeout, and arms its keep-alive timeout only after a first
response: a 150 MB header or 3,000 connections that never finish their
headers were all accepted (issue 12). BentoML builds ``uvicorn.Config`` itself
and exposes none of ``h11_max_incomplete_event_size``, ``limit_concurrency``
or a header timeout, so :func:`install` registers :class:`GuardedHttpToolsProtocol`
as uvicorn's ``"auto"`` HTTP protocol in the worker process, before uvicorn
loads its config. It is uvicorn's own protocol with four checks added:

- at most ``max_connections`` open connections per worker; the next gets 503 and is closed;
- the request line and headers within ``max_header_bytes`` (431 and closed);
- the headers complete within ``header_timeout_seconds`` of the first byte or
  of the connection opening, whichever is later (408 and closed): slowloris
  and connections that send nothing;
- ``idle_timeout_seconds`` between requests on a kept-alive connection;

it ignores ``Upgrade`` headers (:func:`ignore_upgrade`), and it closes with a
lingering close, as nginx does, when it answers a request whose bytes are
still arriving (a 413 before the body, a 431): the answer, then a FIN, then
whatever still comes is read and dropped for up to ``header_timeout_seconds``
and ``max_linger_bytes``.
Closed at once, the unread bytes made the kernel reset the connection, and a
client still sending a 3 MB body read ``ECONNRESET`` instead of the 413.
"""

from __future__ import annotations

import json
import logging
import re
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("recsys.edge")
UPGRADE = re.compile(rb"\r\nupgrade:", re.IGNORECASE)


def ignore_upgrade(data: bytes) -> bytes:
    """The header section with any ``Upgrade`` header renamed, so the request is served as HTTP/1.1.

    ``curl --http2`` and some Java clients send ``Upgrade: h2c`` with a body;
    httptools then stops parsing at the headers and the body is lost (a
    confusing 400). The service upgrades to nothing, so the header is ignored,
    as RFC 9110 allows. Only the part before the blank line is touched.
    """
    head, blank, rest = data.partition(b"\r\n\r\n")
    return UPGRADE.sub(b"\r\nx-ignored-upgrade:", head) + blank + rest


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 5.0
    # The rest of a body that was answered before it arrived (a 404, 415 or shed 503) is read and dropped
    # up to this many bytes, then the connection is closed, lingering (below).
    max_drain_bytes: int = 1024 * 1024
    # A lingering close reads and drops at most this many bytes of a body it answered early (a 413 to a
    # 3 MB upload), and max_drain_bytes of a header section it refused: past that the client is not one
    # that will read the answer.
    max_linger_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(
            max_connections=settings.max_connections,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            idle_timeout_seconds=settings.idle_timeout_seconds,
            max_drain_bytes=settings.max_body_bytes,
        )


def raw_response(status: int, phrase: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response in the edge's envelope, closing the connection."""
    body = json.dumps({"status": "error", "error": phrase.lower().replace(" ", "_"), "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _LingeringTransport:
    """uvicorn's transport, whose ``close()`` asks the guard first: it may linger instead.

    While it lingers it is closing for uvicorn: no pipelined request is started, no keep-alive timer armed,
    no ``100 Continue`` sent, and whatever is still written (an answer to a request the refusal overtook) is
    dropped: the FIN is out.
    """

    def __init__(self, transport: Any, guard: ConnectionGuard) -> None:
        self._transport, self._guard = transport, guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if self._guard._linger_timer is None:
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._guard._linger_timer is not None or self._transport.is_closing()

    def close(self) -> None:
        self._guard._close()


class ConnectionGuard:
    """Mixed in before uvicorn's ``HttpToolsProtocol``; ``limits`` set by :func:`install`."""

    limits = ConnectionLimits()
    # Set by uvicorn's protocol; named here for readers and type checkers.
    connections: set
    transport: Any
    loop: Any
    client: tuple | None
    timeout_keep_alive: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_timeout_seconds
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: TimerHandle | None = None
        # Whether the current request's body has all arrived, and whether it has been answered. An answer
        # may come first (a 404 or 415 before the body is read); the rest of that body is not header bytes.
        self._message_done = False
        self._answered = False
        self._drained = 0
        self._raw: Any = None  # the event loop's transport, under the one uvicorn is given
        self._linger_timer: TimerHandle | None = None
        self._linger_left = 0

    def connection_made(self, transport: Any) -> None:
        self._raw = transport
        super().connection_made(_LingeringTransport(transport, self))
        if len(self.connections) > self.limits.max_connections:
            limit = self.limits.max_connections
            logger.warning("503 connection refused: %d open, the limit is %d", len(self.connections) - 1, limit)
            self._refuse(503, "Service Unavailable", "too many open connections; retry shortly")
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # answered and half-closed: what still arrives is read and dropped
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._raw.close()
            return
        # Only bytes that arrive while headers are awaited, and leave them still incomplete, count. A chunk
        # that ends one request's body and starts the next one's headers is not counted (at most one read,
        # up to 256 KiB): its split point is not known here, and counting the body bytes gave clients a false
        # 431. The edge checks the size of complete headers itself.
        counting, draining = self._awaiting_headers, self._draining
        if counting:
            data = ignore_upgrade(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if counting and self._awaiting_headers:
            self._header_bytes += len(data)
            limit = self.limits.max_header_bytes
            if self._header_bytes > limit:
                logger.warning("431 headers over %d bytes from %s", limit, self._peer())
                message = f"request headers over {limit} bytes"
                self._refuse(431, "Request Header Fields Too Large", message, linger=self.limits.max_drain_bytes)
        elif draining:
            self._drained += len(data)
            if self._drained > self.limits.max_drain_bytes:
                # Answered already: nothing more to say, and no reason to read on.
                logger.warning(
                    "connection closed: over %d bytes after the answer, from %s", self._drained, self._peer()
                )
                self._cancel_header_timer()
                self._close()

    @property
    def _draining(self) -> bool:
        """Answered, and the request's body still arriving: its rest is read and dropped."""
        return self._answered and not self._message_done

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers, self._header_bytes = True, 0
        self._message_done = self._answered = False
        if self._header_timer is None:
            self._arm_header_timer()

    def on_message_complete(self) -> None:
        self._message_done = True
        if self._answered:  # answered before its body was in: the next bytes are the next request's
            self._awaiting_headers, self._header_bytes = True, 0
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self._lingering:  # the answer closed the connection: nothing to wait for (uvicorn sees it closing)
            super().on_response_complete()
            return
        self._answered = True
        if self._message_done:
            self._awaiting_headers, self._header_bytes = True, 0
        else:  # the body is still arriving: on_message_complete starts the next request
            self._drained = 0
            # The rest of the body and the next request's headers get the header timeout: new data cancels
            # uvicorn's keep-alive timer, so without this a trickle (or silence after the body) holds the
            # connection for good.
            if self._header_timer is None:
                self._arm_header_timer()
        super().on_response_complete()  # arms the idle (keep-alive) timer

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if (self._awaiting_headers or self._draining) and not self.transport.is_closing() and not self._lingering:
            seconds = self.limits.header_timeout_seconds
            logger.warning("408 headers not complete within %g s from %s", seconds, self._peer())
            self._refuse(408, "Request Timeout", f"request headers not received within {seconds:g} s")

    def _refuse(self, status: int, phrase: str, message: str, linger: int = 0) -> None:
        """Answer and close, lingering over up to ``linger`` bytes when the client may still be sending."""
        self._cancel_header_timer()
        self._awaiting_headers = False
        self._raw.write(raw_response(status, phrase, message))
        if linger:
            self._linger(linger)
        else:
            self._raw.close()

    @property
    def _lingering(self) -> bool:
        return self._linger_timer is not None

    def _close(self) -> None:
        """What uvicorn's ``transport.close()`` does here: linger while the request's bytes still arrive."""
        arriving = not self._awaiting_headers and not self._message_done
        if self._lingering or not arriving:
            self._raw.close()
        else:
            self._linger(self.limits.max_linger_bytes)

    def _linger(self, budget: int) -> None:
        """Half-close after the answer, read and drop what comes, close when the client does or time is up."""
        self._cancel_header_timer()
        if self._raw.is_closing() or not self._raw.can_write_eof():  # TLS cannot half-close
            self._raw.close()
            return
        self._raw.write_eof()
        self._linger_left = budget
        self._raw.resume_reading()  # uvicorn pauses reading while an unread body piles up
        self._linger_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._raw.close)

    def _peer(self) -> str:
        return self.client[0] if self.client else "?"


def install(limits: ConnectionLimits) -> bool:
    """Make the guarded protocol uvicorn's ``"auto"`` choice in this process; False if httptools is missing."""
    from uvicorn import config

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn falls back to h11, which caps headers at 16 KiB itself
        logger.warning("httptools is not installed: connection limits other than h11's header cap are off")
        return False
    global Protocol
    Protocol = type("GuardedHttpToolsProtocol", (ConnectionGuard, HttpToolsProtocol), {"limits": limits})
    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:Protocol"  # private uvicorn registry: serving/internals.py
    return True


Protocol: type | None = None  # the class uvicorn loads, once install() has run
