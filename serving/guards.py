"""ASGI guards in front of every endpoint: request body size and API key.

They run before BentoML parses anything, so an oversized or unauthorised
request costs almost nothing and always gets a JSON 4xx.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/livez", "/readyz", "/healthz"})


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


class RequestGuard:
    """Reject oversized bodies (413) and, when a key is set, unauthorised calls (401)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, api_key: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:] if auth[:7].lower() == b"bearer " else b""
        # Constant time, so the key cannot be guessed byte by byte from timings.
        return hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key and scope["path"] not in PROBES and not self._authorised(scope):
            await send_json(
                send,
                401,
                {"error": "missing or wrong API key (send it as 'Authorization: Bearer <key>' or 'X-API-Key')"},
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_body_bytes:
                await self._too_large(send, int(declared))
            else:  # the HTTP parser holds the body to its declared length
                await self.app(scope, receive, send)
            return
        # Without a declared length (chunked upload), read up to the limit first.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._too_large(send, size)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, size: int) -> None:
        await send_json(
            send,
            413,
            {"error": f"request body too large: {size} bytes, the limit is {self.max_body_bytes}"},
        )
