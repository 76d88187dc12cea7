"""The ASGI RequestGuard called directly, with a fake app behind it: sizes and keys."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.guards import RequestGuard

LIMIT = 100
KEY = "k3y-0123456789"


class FakeApp:
    """Records whether it was called and the body it could read; answers 200."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        if scope["type"] == "http" and scope["method"] == "POST":
            while True:
                message = await receive()
                self.body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    guard: RequestGuard,
    path: str = "/recommend",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict, dict]:
    """Send one request through the guard; the status, the JSON body (if any) and the headers."""
    scope = {
        "type": "http",
        "path": path,
        "method": method,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    chunks = chunks or [b""]
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    decoded = json.loads(body) if response_headers.get("content-type") == "application/json" else {}
    return start["status"], decoded, response_headers


def test_declared_length_over_the_limit_is_413_before_the_app():
    app = FakeApp()
    status, body, headers = call(RequestGuard(app, LIMIT), headers={"content-length": str(LIMIT + 1)})
    assert status == 413 and not app.called
    assert body == {"error": f"request body too large: {LIMIT + 1} bytes, the limit is {LIMIT}"}
    assert headers["content-length"] == str(len(json.dumps(body)))


def test_declared_length_within_the_limit_goes_to_the_app():
    app = FakeApp()
    status, _, _ = call(RequestGuard(app, LIMIT), headers={"content-length": "5"}, chunks=[b"hello"])
    assert status == 200 and app.called and app.body == b"hello"


def test_chunked_body_over_the_limit_is_413():
    app = FakeApp()
    status, body, _ = call(RequestGuard(app, LIMIT), chunks=[b"x" * 60, b"x" * 60, b"x" * 60])
    assert status == 413 and not app.called
    assert body == {"error": f"request body too large: 120 bytes, the limit is {LIMIT}"}  # stops reading at once


def test_chunked_body_within_the_limit_is_replayed_whole():
    app = FakeApp()
    status, _, _ = call(RequestGuard(app, LIMIT), chunks=[b'{"user_id": ', b'"196"}'])
    assert status == 200 and app.body == b'{"user_id": "196"}'


def test_get_requests_are_not_read():
    app = FakeApp()
    assert call(RequestGuard(app, LIMIT), path="/metrics", method="GET")[0] == 200 and app.called


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": KEY}, {"X-API-Key": ""}],
    ids=["none", "wrong-bearer", "wrong-header", "no-bearer-prefix", "empty-header"],
)
def test_missing_or_wrong_key_is_401(headers):
    app = FakeApp()
    status, body, response_headers = call(RequestGuard(app, LIMIT, api_key=KEY), headers=headers)
    assert status == 401 and not app.called
    assert body["error"].startswith("missing or wrong API key")
    assert response_headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}]
)
def test_right_key_is_let_through(headers):
    app = FakeApp()
    assert call(RequestGuard(app, LIMIT, api_key=KEY), headers=headers)[0] == 200 and app.called


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_probes_stay_open_without_a_key(path):
    app = FakeApp()
    assert call(RequestGuard(app, LIMIT, api_key=KEY), path=path, method="GET")[0] == 200 and app.called


def test_no_key_configured_means_no_check():
    app = FakeApp()
    assert call(RequestGuard(app, LIMIT), chunks=[b"{}"])[0] == 200 and app.called


def test_non_http_scopes_pass_through():
    app = FakeApp()
    guard = RequestGuard(app, LIMIT, api_key=KEY)

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    asyncio.run(guard({"type": "lifespan"}, receive, send))
    assert app.called
