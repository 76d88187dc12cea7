"""The server's edge: one ASGI layer outside everything BentoML adds (metrics, tracing, timeouts).

What a request must get past before BentoML sees it, in this order:

1. header count and size (431);
2. a known route and method (JSON 404/405; unknown paths touch no metric);
3. the API key, when one is set (401; conflicting keys refused);
4. on the API routes: ``application/json`` only (415), no ``Content-Encoding`` (415),
   a body within the size limit (413) that arrives in time (408) and is JSON
   without duplicate keys, non-finite numbers or integers over 19 digits (400).

Every error the edge sends, and every error BentoML sends behind it on an API
route, is one JSON envelope: ``{"status": "error", "error": <code>, "message": <text>}``
(``detail``: the field-level list on 400s from validation).

It replaces the ``RequestGuard`` middleware that used to sit inside BentoML's
stack: a middleware added with ``add_asgi_middleware`` runs after BentoML's
metrics middleware has already counted the raw path, so it could not stop
the unknown-path flood. :func:`serve_behind_edge` wraps the ASGI app BentoML
builds instead.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from serving.api_page import STATIC_FILES, send_page
from serving.batcher import release_reservation
from serving.bentoml_app import serve_with_worker_app

if TYPE_CHECKING:
    from serving.batcher import Pressure, Reservation

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("recsys.edge")

PROBES = frozenset({"/livez", "/readyz", "/healthz"})
STATIC_PREFIX = "/static_content/"
# GET routes BentoML serves besides the probes (metrics, the OpenAPI document, the API page), and the files of its
# static folder the API page loads: no other path there (BentoML's metrics took each distinct path as a label, and
# a flood of them grew ``/metrics``).
PAGES = frozenset({"/metrics", "/docs.json", "/schema.json", "/"}) | {STATIC_PREFIX + name for name in STATIC_FILES}
JSON_TYPE = "application/json"
# BentoML's validation errors name its generated IO classes ("RecommendRequestIODescriptor").
INTERNAL_NAME = re.compile(r"\s*\bfor \w+IODescriptor\b|\b\w+IODescriptor\b")


class EdgeError(Exception):
    """A request the edge refuses: its status, a code and a message for the envelope."""

    def __init__(self, status: int, message: str, headers: list | None = None, detail: list | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.detail = detail


@dataclass(frozen=True)
class EdgeLimits:
    """What the edge enforces; built from :class:`serving.settings.ServiceSettings`."""

    api_routes: frozenset[str]
    max_body_bytes: int = 1024 * 1024
    max_headers: int = 64
    max_header_bytes: int = 16 * 1024
    body_timeout_seconds: float = 10.0
    api_key: str | None = None
    metrics_public: bool = False
    open_paths: frozenset[str] = field(default=PROBES)
    # Load shedding before the body is read: routes that queue for the pipeline, with the most queries one
    # request to them can bring, and "is there no room for that many?".
    queued_routes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    pressure: Pressure | None = None  # the worker's queue: checked before the body is read, room held after it

    @classmethod
    def from_settings(cls, settings: Any, api_routes: frozenset[str] | set[str]) -> EdgeLimits:
        return cls(
            api_routes=frozenset(api_routes),
            max_body_bytes=settings.max_body_bytes,
            max_headers=settings.max_headers,
            max_header_bytes=settings.max_header_bytes,
            body_timeout_seconds=settings.body_timeout_seconds,
            api_key=settings.api_key,
            metrics_public=settings.metrics_public,
        )


def envelope(status: int, message: str, detail: list | None = None) -> dict:
    """The one error body: status, a code derived from the HTTP status, a message (and field details)."""
    body: dict[str, Any] = {
        "status": "error",
        "error": HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_"),
        "message": message,
    }
    if detail is not None:
        body["detail"] = detail
    return body


async def send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def shown(path: str, limit: int = 80) -> str:
    """Client-chosen text (a path, a field name) as it may appear in a log line: escaped and cut short."""
    text = path.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit]}..."


# --- checks on the request line and headers -------------------------------------------------------


def check_headers(scope: Scope, limits: EdgeLimits) -> None:
    headers = scope.get("headers") or []
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if len(headers) > limits.max_headers or size > limits.max_header_bytes:
        raise EdgeError(
            431,
            f"request headers too large: {len(headers)} headers, {size} bytes; "
            f"the limits are {limits.max_headers} headers and {limits.max_header_bytes} bytes",
            [(b"connection", b"close")],
        )


def check_pressure(scope: Scope, limits: EdgeLimits) -> None:
    """503 with Retry-After, before the body is read, while the worker's queue has no room for the request.

    The body is unread, so a route's room is the most queries one request can
    bring (1 for ``/recommend``, the batch limit for ``/recommend_batch``).
    Measured under a flood of 20-user batches: with "full" meaning no room for
    one query, the queue hovered just below it and almost every refusal came
    from the handler, after BentoML had parsed and validated the body, 80% of
    the event loop, so the pipeline thread was starved of the GIL. Refused
    too while more seconds of work wait than allowed (:class:`serving.batcher.Pressure`).
    """
    room = limits.queued_routes.get(scope["path"])
    if limits.pressure is None or room is None:
        return
    refusal = limits.pressure.refusal(room)
    if refusal is not None:
        raise EdgeError(503, refusal, [(b"retry-after", b"1")])


def hold_room(scope: Scope, limits: EdgeLimits, document: object) -> Reservation | None:
    """Hold the queries this body brings in the worker's queue until the handler queues them (503 if no room).

    The reservation is the request task's (:func:`serving.batcher.release_reservation` frees it).

    Held once the body is read, not before: held for the most a request may bring from its first byte,
    two slow one-byte uploads locked a worker out of every request, and a few 1-query batches at once
    were refused by an empty queue. Held before validation, so bodies being validated count: under 50
    clients of the heaviest batches, every request arriving during a validation used to pass, be
    validated, then be refused in the handler.
    """
    room = limits.queued_routes.get(scope["path"])
    if limits.pressure is None or room is None:
        return None
    requests = document.get("requests") if isinstance(document, dict) else None
    queries = len(requests) if room > 1 and isinstance(requests, list) else 1
    reservation = limits.pressure.reserve(min(max(queries, 1), room))
    if reservation is None:
        raise EdgeError(
            503, "overloaded: this worker's queue has no room for this request; retry shortly", [(b"retry-after", b"1")]
        )
    return reservation


def check_route(scope: Scope, limits: EdgeLimits) -> None:
    """Only the routes the service serves, with their methods; everything else is a JSON 404/405."""
    path, method = scope["path"], scope["method"]
    if path in limits.api_routes:
        allowed = ("POST",)
    elif path in PROBES or path in PAGES:
        allowed = ("GET", "HEAD")
    else:
        raise EdgeError(404, f"no such route: {shown(path)}")
    if method not in allowed:
        raise EdgeError(405, f"{shown(path)} accepts {', '.join(allowed)}", [(b"allow", ", ".join(allowed).encode())])


def presented_keys(headers: list) -> set[bytes]:
    """Every API key the request presents, trimmed: X-API-Key values and Bearer tokens."""
    keys = set()
    for name, value in headers:
        if name == b"x-api-key":
            keys.add(value.strip())
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            keys.add(token.strip() if scheme.lower() == b"bearer" else b"")
    return keys


def check_key(scope: Scope, limits: EdgeLimits) -> None:
    if not limits.api_key or scope["path"] in limits.open_paths:
        return
    if limits.metrics_public and scope["path"] == "/metrics":
        return
    keys = presented_keys(scope.get("headers") or [])
    challenge = [(b"www-authenticate", b"Bearer")]
    if len(keys) > 1:
        raise EdgeError(401, "conflicting API keys: X-API-Key and Authorization disagree", challenge)
    # Constant time, so the key cannot be guessed byte by byte from timings.
    if not keys or not hmac.compare_digest(keys.pop(), limits.api_key.encode()):
        raise EdgeError(
            401,
            "missing or wrong API key (send it as 'Authorization: Bearer <key>' or 'X-API-Key')",
            challenge,
        )


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers") or [] if key == name), None)


def check_body_headers(scope: Scope, limits: EdgeLimits) -> int | None:
    """Content type and encoding of an API request; its declared length (413 if over the limit)."""
    # Every Content-Encoding header, and every coding in each: one "identity" first must not hide a "gzip".
    codings = [
        coding.strip().lower()
        for name, value in scope.get("headers") or []
        if name == b"content-encoding"
        for coding in value.split(b",")
    ]
    encoding = next((c for c in codings if c != b"identity"), None)
    if encoding is not None:
        raise EdgeError(415, f"unsupported Content-Encoding {shown(encoding.decode('latin-1'), 40)}: send plain JSON")
    declared = header(scope, b"content-length")
    if declared is not None:
        length = int(declared) if declared.strip().isdigit() else None
    else:  # RFC 9112 6.3: a request with neither Content-Length nor Transfer-Encoding has no body
        length = 0 if header(scope, b"transfer-encoding") is None else None
    content_type = header(scope, b"content-type")
    media = content_type.split(b";")[0].strip().lower().decode("latin-1") if content_type else ""
    # An empty body may come without a type (`curl -X POST .../model_info`); any other needs JSON.
    if media != JSON_TYPE and (media or length != 0):
        raise EdgeError(415, f"unsupported content type {shown(media, 40) or '(none)'}: send {JSON_TYPE}")
    if length is not None and length > limits.max_body_bytes:
        raise too_large(length, limits)
    return length


def too_large(size: int, limits: EdgeLimits) -> EdgeError:
    return EdgeError(
        413,
        f"request body too large: {size} bytes, the limit is {limits.max_body_bytes}",
        [(b"connection", b"close")],
    )


# --- the body ---------------------------------------------------------------------------------------


async def read_body(receive: Receive, limits: EdgeLimits) -> bytes | None:
    """The whole body within the size and time limits; None if the client went away."""
    deadline = asyncio.get_running_loop().time() + limits.body_timeout_seconds
    chunks, size = [], 0
    while True:
        try:
            # A deadline, not wait_for: wait_for wraps every receive in a task of its own, a lone request's
            # largest cost in the edge (py-spy, benchmarks.request_steps).
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise EdgeError(
                408,
                f"request body not received within {limits.body_timeout_seconds:g} s",
                [(b"connection", b"close")],
            ) from None
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limits.max_body_bytes:
            raise too_large(size, limits)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


MAX_INT_DIGITS = 19  # ids go up to 10**18; nothing in the API needs a longer integer


def _bounded_int(text: str) -> int:
    """An integer the API can hold: longer ones overflow floats and int64 further in (a 500, or a lost event)."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"integer {text[:24]}... with {digits} digits is out of range (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def invalid_json(reason: str) -> EdgeError:
    """A 400 shaped like a validation error (``detail`` a list), so clients read every 400 one way."""
    message = f"request body is not valid JSON: {reason}"
    return EdgeError(400, message, detail=[{"type": "json_invalid", "loc": [], "msg": message}])


def check_json(body: bytes) -> object:
    """A body the API may parse: JSON, no duplicate keys, finite numbers only (400 otherwise); the document."""
    if not body.strip():
        return None
    try:
        return json.loads(
            body,
            object_pairs_hook=_unique_keys,
            parse_float=_finite,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        raise invalid_json("not UTF-8") from None
    except RecursionError:
        raise invalid_json("nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise invalid_json(str(exc)) from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that hands the app the body already read, then the real channel."""
    done = False

    async def receive_again() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


# --- errors from behind the edge ---------------------------------------------------------------------


def field_messages(detail: list) -> str:
    parts = []
    for item in detail[:3]:
        if isinstance(item, dict):
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
    more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
    return "; ".join(parts) + more


def rewrite_error(status: int, payload: bytes) -> bytes | None:
    """BentoML's error body for ``status`` in the edge's envelope; None to keep it as sent."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if status == 504:
        # BentoML's traffic timeout: the worker had no time for the request, as under any overload.
        said = body.get("error") if isinstance(body, dict) else None
        said = str(said or "not able to process the request in time")
        return json.dumps(envelope(503, f"{said}: this worker is overloaded; retry shortly")).encode()
    if status == 503 and isinstance(body, dict) and body.get("status") == "error" and "error" not in body:
        # The service's own shedding (serving/batcher.py): its message, in the envelope.
        return json.dumps(envelope(status, str(body.get("message") or "overloaded"))).encode()
    if isinstance(body, dict) and body.get("status") == "error":
        return None  # already the envelope (the service's own 404 for an unknown item)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # BentoML sends some 4xx as a one-element list
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") if isinstance(body.get("detail"), list) else None
    if status >= 500:
        return json.dumps(envelope(status, "internal error; the server log has the details")).encode()
    if detail:
        message = f"invalid request: {field_messages(detail)}"
    else:
        message = INTERNAL_NAME.sub("", str(body.get("error") or HTTPStatus(status).phrase))
    return json.dumps(envelope(status, message, detail)).encode()


def rewriting(send: Send) -> Send:
    """A send callable that turns error responses (4xx/5xx) into the envelope, and sends an answer BentoML
    streams (its JSON answers come as chunks, without a length) as one body with its length.

    The API's answers are small and never streamed: whole, they cost uvicorn one socket write and one pass down
    the send chain less than header, chunk and closing chunk, and the client reads a plain body.
    """
    held: dict[str, Any] = {}

    async def send_enveloped(message: Message) -> None:
        if message["type"] == "http.response.start" and not isinstance(message.get("headers", []), list):
            message = {**message, "headers": list(message["headers"])}  # any iterable, read more than once below
        if message["type"] == "http.response.start" and (message["status"] >= 400 or _unsized(message)):
            held["start"], held["body"] = message, b""
            return
        if "start" not in held or message["type"] != "http.response.body":
            await send(message)
            return
        held["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        start = held.pop("start")
        if start["status"] < 400:
            length = (b"content-length", str(len(held["body"])).encode())
            await send({**start, "headers": [*start.get("headers", []), length]})
            await send({"type": "http.response.body", "body": held.pop("body")})
            return
        payload = rewrite_error(start["status"], held["body"]) or held["body"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if start["status"] in (503, 504):  # overload is a 503 with Retry-After, whichever layer ran out of time
            start = {**start, "status": 503}
            if not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", b"1"))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return send_enveloped


def _unsized(start: Message) -> bool:
    """An answer uvicorn would send chunked for want of a length (a status with a body, neither a length nor a
    transfer encoding of its own). ``headers`` must be a list: it is read here and sent on."""
    named = {name.lower() for name, _ in start.get("headers", [])}
    return start["status"] not in (204, 304) and not named & {b"content-length", b"transfer-encoding"}


# --- the layer ------------------------------------------------------------------------------------


class Edge:
    """The outermost ASGI app: refuse what the service must not see, pass the rest to BentoML."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the service has no websocket routes
            await send({"type": "websocket.close", "code": 1003})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            try:
                receive = await self.admit(scope, receive)
            except EdgeError as error:
                await self.refuse(scope, send, error)
                return
            if receive is None:  # the client left while sending its body
                return
            if scope["path"] == "/":  # this API's page, not BentoML's (serving/api_page.py)
                await send_page(send, scope["method"])
                return
            api = scope["path"] in self.limits.api_routes
            await self.app(scope, receive, rewriting(send) if api else send)
        finally:
            release_reservation()  # the room hold_room held in the queue, however the request ended

    async def admit(self, scope: Scope, receive: Receive) -> Receive | None:
        """The receive channel to hand on, or :class:`EdgeError` saying why not."""
        limits = self.limits
        check_headers(scope, limits)
        check_route(scope, limits)
        check_key(scope, limits)
        if scope["path"] not in limits.api_routes:
            return receive
        check_pressure(scope, limits)
        check_body_headers(scope, limits)
        body = await read_body(receive, limits)
        if body is None:
            return None
        hold_room(scope, limits, check_json(body))
        return replay(body, receive)

    async def refuse(self, scope: Scope, send: Send, error: EdgeError) -> None:
        client = (scope.get("client") or ("?",))[0]
        # One line per refused request, no traceback: these are the client's mistakes.
        logger.warning("%d %s %s from %s: %s", error.status, scope["method"], shown(scope["path"]), client, error)
        await send_json(send, error.status, envelope(error.status, error.message, error.detail), error.headers)


def serve_behind_edge(service: Any, limits: EdgeLimits, connections: Any = None) -> None:
    """Put :class:`Edge` around the ASGI app BentoML builds for ``service``.

    With ``connections`` (:class:`serving.connection.ConnectionLimits`), the
    worker's uvicorn gets the connection-level limits too: ``to_asgi`` runs
    in the worker just before BentoML builds uvicorn's config.

    BentoML's ``add_asgi_middleware`` places a middleware after (inside) its
    own metrics, tracing, timeout and concurrency middleware, and offers no
    hook on the finished app. Its worker gets the app from ``service.to_asgi()``,
    so the service object is given a subclass whose ``to_asgi`` returns the
    app (built as BentoML builds it, minus per-request lookups:
    :func:`serving.bentoml_app.serve_with_worker_app`) wrapped, and an
    ``openapi_spec`` that documents what the edge sends (:mod:`serving.openapi`).
    The subclass adds no state (``__slots__ = ()``): everything else about the
    service is BentoML's.
    """
    # Every route the service declares is an API route, so a new endpoint passes the edge without a list to edit.
    limits = replace(limits, api_routes=limits.api_routes | {api.route for api in service.apis.values()})
    serve_with_worker_app(service)  # the app the edge wraps: BentoML's, its per-request lookups made once
    base = type(service)

    class EdgedService(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def openapi_spec(self) -> Any:
            from serving.openapi import ConformingSpec

            return ConformingSpec(super().openapi_spec, limits.api_routes)

        def to_asgi(self, is_main: bool = True) -> ASGIApp:
            if connections is not None:
                from serving import connection

                connection.install(connections)
            return Edge(super().to_asgi(is_main), limits)

    EdgedService.__name__ = EdgedService.__qualname__ = base.__name__
    service.__class__ = EdgedService  # private BentoML structure: serving/internals.py
