"""The ASGI edge called directly, with a fake app behind it: routes, headers, keys, bodies, envelopes."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.api_page import STATIC_FILES
from serving.batcher import Pressure
from serving.edge import Edge, EdgeLimits, presented_keys, rewrite_error, rewriting

LIMIT = 100
KEY = "k3y-0123456789"
API = frozenset({"/recommend", "/recommend_batch", "/model_info"})
JSON = {"content-type": "application/json"}


class FakeApp:
    """Records whether it was called and the body it could read; answers 200 (or ``status``)."""

    def __init__(self, status: int = 200, body: bytes = b"ok") -> None:
        self.called = False
        self.body = b""
        self.status, self.answer = status, body

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        if scope["type"] == "http" and scope["method"] == "POST":
            while True:
                message = await receive()
                self.body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": self.answer})


def edge(app, **limits) -> Edge:
    return Edge(app, EdgeLimits(api_routes=API, max_body_bytes=LIMIT, **limits))


def call(
    layer: Edge,
    path: str = "/recommend",
    method: str = "POST",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    chunks: list[bytes] | None = None,
    stall: bool = False,
) -> tuple[int, dict, dict]:
    """Send one request through the edge; the status, the JSON body (if any) and the headers."""
    pairs = (
        list(headers.items()) if isinstance(headers, dict) else list(headers if headers is not None else JSON.items())
    )
    scope = {
        "type": "http",
        "path": path,
        "method": method,
        "headers": [(k.lower().encode(), v.encode()) for k, v in pairs],
    }
    chunks = chunks or [b""]
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or stall} for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        if pending:
            return pending.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    decoded = json.loads(body) if response_headers.get("content-type") == "application/json" else {}
    return start["status"], decoded, response_headers


def test_declared_length_over_the_limit_is_413_before_the_app():
    app = FakeApp()
    status, body, headers = call(edge(app), headers={**JSON, "content-length": str(LIMIT + 1)})
    assert status == 413 and not app.called
    assert body == {
        "status": "error",
        "error": "request_entity_too_large",
        "message": f"request body too large: {LIMIT + 1} bytes, the limit is {LIMIT}",
    }
    assert headers["content-length"] == str(len(json.dumps(body)))


def test_body_within_the_limit_is_replayed_whole():
    app = FakeApp()
    status, _, _ = call(edge(app), chunks=[b'{"user_id": ', b'"196"}'])
    assert status == 200 and app.body == b'{"user_id": "196"}'


def test_chunked_body_over_the_limit_is_413():
    app = FakeApp()
    status, body, _ = call(edge(app), chunks=[b"x" * 60, b"x" * 60, b"x" * 60])
    assert status == 413 and not app.called
    assert body["message"] == f"request body too large: 120 bytes, the limit is {LIMIT}"  # stops reading at once


def test_stalled_body_is_408():
    app = FakeApp()
    status, body, headers = call(edge(app, body_timeout_seconds=0.2), chunks=[b'{"user_id": '], stall=True)
    assert status == 408 and not app.called and headers["connection"] == "close"
    assert body["message"].startswith("request body not received within 0.2 s")


@pytest.mark.parametrize(
    "path",
    ["/x1", "/recommend/", "/RECOMMEND", "/static_content/../service.py", "/static_content/", "/static_content/a.js"],
)
def test_unknown_paths_are_404_before_the_app(path):
    app = FakeApp()
    status, body, _ = call(edge(app), path=path, method="GET")
    assert status == 404 and not app.called and body["status"] == "error"


@pytest.mark.parametrize("name", sorted(STATIC_FILES))
def test_the_files_the_api_page_loads_reach_the_app(name):
    app = FakeApp()
    status, _, _ = call(edge(app), path=f"/static_content/{name}", method="GET")
    assert status == 200 and app.called


def test_wrong_method_is_405():
    app = FakeApp()
    status, body, headers = call(edge(app), path="/recommend", method="GET")
    assert status == 405 and headers["allow"] == "POST" and body["error"] == "method_not_allowed"


def test_too_many_or_too_large_headers_are_431():
    app = FakeApp()
    many = [*JSON.items(), *((f"x-{i}", "1") for i in range(70))]
    assert call(edge(app), headers=many)[0] == 431
    assert call(edge(app), headers={**JSON, "x-big": "a" * 20_000})[0] == 431
    assert not app.called


@pytest.mark.parametrize(
    "content_type", ["text/plain", "image/png", "multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_api_routes_take_only_json(content_type):
    app = FakeApp()
    status, body, _ = call(edge(app), headers={"content-type": content_type}, chunks=[b"{}"])
    assert status == 415 and not app.called and content_type in body["message"]


def test_json_with_charset_and_an_empty_untyped_body_are_accepted():
    app = FakeApp()
    assert call(edge(app), headers={"content-type": "application/json; charset=utf-8"}, chunks=[b"{}"])[0] == 200
    assert call(edge(app), path="/model_info", headers={"content-length": "0"})[0] == 200


def test_an_untyped_request_without_length_or_transfer_encoding_has_no_body():
    # `curl -X POST .../model_info` sends neither header: RFC 9112 says the body is empty.
    assert call(edge(FakeApp()), path="/model_info", headers={})[0] == 200
    assert call(edge(FakeApp()), path="/model_info", headers={"transfer-encoding": "chunked"})[0] == 415


def test_content_encoding_is_415():
    app = FakeApp()
    assert call(edge(app), headers={**JSON, "content-encoding": "gzip"}, chunks=[b"\x1f\x8b"])[0] == 415
    # A second header, or a list of codings, is read too.
    twice = [*JSON.items(), ("content-encoding", "identity"), ("content-encoding", "gzip")]
    assert call(edge(app), headers=twice, chunks=[b"\x1f\x8b"])[0] == 415
    listed = {**JSON, "content-encoding": "identity, gzip"}
    assert call(edge(app), headers=listed, chunks=[b"\x1f\x8b"])[0] == 415
    assert not app.called
    assert call(edge(app), headers={**JSON, "content-encoding": "identity"}, chunks=[b"{}"])[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": "1", "user_id": "2"}',
        b'{"user_id": "1", "k": NaN}',
        b'{"a": 1e309}',
        b'{"a": -Infinity}',
        b"{",
        b'{"a": {"gte": 1' + b"0" * 40 + b"}}",
    ],
    ids=["duplicate", "nan", "overflow", "infinity", "truncated", "huge-int"],
)
def test_bad_json_is_400_at_the_edge(body):
    app = FakeApp()
    status, answer, _ = call(edge(app), chunks=[body])
    assert status == 400 and not app.called and answer["message"].startswith("request body is not valid JSON")
    assert "sys." not in answer["message"]  # no Python internals (int_max_str_digits) in what the client reads


def test_an_integer_over_pythons_digit_limit_is_a_plain_400():
    app = FakeApp()
    status, answer, _ = call(Edge(app, EdgeLimits(api_routes=API)), chunks=[b'{"a": -' + b"9" * 5000 + b"}"])
    assert status == 400 and not app.called and "5000 digits is out of range" in answer["message"]
    assert "sys." not in answer["message"]


def test_integers_up_to_19_digits_pass_the_edge():
    app = FakeApp()
    assert call(edge(app), chunks=[b'{"user_id": -' + b"9" * 19 + b', "k": 1' + b"0" * 18 + b"}"])[0] == 200
    assert app.called


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": KEY}, {"X-API-Key": ""}],
    ids=["none", "wrong-bearer", "wrong-header", "no-bearer-prefix", "empty-header"],
)
def test_missing_or_wrong_key_is_401(headers):
    app = FakeApp()
    status, body, response_headers = call(edge(app, api_key=KEY), headers={**JSON, **headers})
    assert status == 401 and not app.called
    assert body["message"].startswith("missing or wrong API key")
    assert response_headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer   {KEY} "},
        {"X-API-Key": f" {KEY}\t"},
        {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"},
    ],
    ids=["bearer", "bearer-spaces", "header-trimmed", "both-agree"],
)
def test_right_key_is_let_through(headers):
    app = FakeApp()
    assert call(edge(app, api_key=KEY), headers={**JSON, **headers})[0] == 200 and app.called


def test_conflicting_keys_are_refused():
    app = FakeApp()
    headers = {**JSON, "X-API-Key": "wrong", "Authorization": f"Bearer {KEY}"}
    status, body, _ = call(edge(app, api_key=KEY), headers=headers)
    assert status == 401 and body["message"].startswith("conflicting API keys") and not app.called
    assert presented_keys([(b"x-api-key", b" a "), (b"authorization", b"Bearer  a")]) == {b"a"}


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_probes_stay_open_without_a_key(path):
    app = FakeApp()
    assert call(edge(app, api_key=KEY), path=path, method="GET")[0] == 200 and app.called


def test_metrics_open_only_when_public():
    assert call(edge(FakeApp(), api_key=KEY), path="/metrics", method="GET")[0] == 401
    assert call(edge(FakeApp(), api_key=KEY, metrics_public=True), path="/metrics", method="GET")[0] == 200


def test_non_http_scopes_pass_through():
    app = FakeApp()

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    asyncio.run(edge(app, api_key=KEY)({"type": "lifespan"}, receive, send))
    assert app.called


def test_errors_from_behind_are_enveloped_without_internal_names():
    bentoml_400 = {
        "error": "1 validation error for RecommendRequestIODescriptor",
        "detail": [{"type": "greater_than_equal", "loc": ["k"], "msg": "Input should be greater than or equal to 1"}],
    }
    status, body, headers = call(edge(FakeApp(400, json.dumps(bentoml_400).encode())), chunks=[b"{}"])
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["status"] == "error" and body["detail"] == bentoml_400["detail"]
    assert body["message"] == "invalid request: k: Input should be greater than or equal to 1"
    assert "IODescriptor" not in json.dumps(body)
    assert json.loads(rewrite_error(500, b'{"error": "boom"}'))["message"].startswith("internal error")
    assert rewrite_error(404, b'{"status": "error", "message": "unknown item_id"}') is None


def test_a_full_queue_is_503_before_the_body_is_read():
    pressure = Pressure(pending=413, limit=512)
    routes = {"/recommend": 1, "/recommend_batch": 100}
    app = FakeApp()
    layer = edge(app, queued_routes=routes, pressure=pressure)
    # Room for a single request, not for the largest batch: the batch route is refused unread.
    assert call(layer, chunks=[b'{"user_id": "1"}'])[0] == 200
    status, body, headers = call(layer, "/recommend_batch", chunks=[b'{"requests": [{"user_id": "1"}]}'])
    assert (status, body["error"], headers["retry-after"]) == (503, "service_unavailable", "1")
    assert body["message"] == "overloaded: this worker's queue has no room for this request; retry shortly"
    pressure.pending = 512
    app.called = False
    status, _, _ = call(layer, chunks=[b'{"user_id": "1"}'])
    assert (status, app.called) == (503, False)
    assert call(edge(FakeApp(), queued_routes=routes, pressure=pressure), "/model_info")[0] == 200
    pressure.pending = 412  # exactly room for the largest batch
    assert call(layer, "/recommend_batch", chunks=[b'{"requests": [{"user_id": "1"}]}'])[0] == 200
    # A queue smaller than the largest batch still takes batches, whenever it is empty.
    small = Pressure(pending=0, limit=60)
    layer = edge(FakeApp(), queued_routes=routes, pressure=small)
    assert call(layer, "/recommend_batch", chunks=[b'{"requests": [{"user_id": "1"}]}'])[0] == 200
    small.pending = 1
    assert call(layer, "/recommend_batch", chunks=[b'{"requests": [{"user_id": "1"}]}'])[0] == 503


def test_bentomls_timeout_is_a_503_with_retry_after_not_an_internal_error():
    timed_out = json.dumps({"error": "Not able to process the request in 10.0 seconds"}).encode()
    status, body, headers = call(edge(FakeApp(504, timed_out)), chunks=[b"{}"])
    assert (status, body["error"], headers["retry-after"]) == (503, "service_unavailable", "1")
    expected = "Not able to process the request in 10.0 seconds: this worker is overloaded; retry shortly"
    assert body["message"] == expected
    status, body, _ = call(edge(FakeApp(504, b"upstream timed out")), chunks=[b"{}"])  # not JSON: the same 503
    assert (status, body["error"]) == (503, "service_unavailable") and "overloaded" in body["message"]


def test_the_services_own_503_is_put_in_the_envelope():
    shed = json.dumps({"user_id": "1", "recommendations": [], "status": "error", "message": "overloaded: 9 waiting"})
    assert json.loads(rewrite_error(503, shed.encode())) == {
        "status": "error",
        "error": "service_unavailable",
        "message": "overloaded: 9 waiting",
    }


def test_the_room_held_is_what_the_body_brings_from_when_it_is_read_until_the_request_ends():
    """Held from the first byte for the most a batch may bring, two slow uploads locked a worker out."""
    pressure = Pressure(pending=0, limit=200)
    routes = {"/recommend": 1, "/recommend_batch": 100}
    held: list[int] = []

    class Holding(FakeApp):
        async def __call__(self, scope, receive, send) -> None:
            held.append(pressure.reserved)  # while BentoML would validate the body
            await super().__call__(scope, receive, send)

    layer = edge(Holding(), queued_routes=routes, pressure=pressure)
    three = b'{"requests": [{"user_id": "1"}, {"user_id": "2"}, {"user_id": "3"}]}'
    assert call(layer, "/recommend_batch", chunks=[three[:10], three[10:]])[0] == 200
    assert call(layer, chunks=[b'{"user_id": "1"}'])[0] == 200
    assert held == [3, 1] and pressure.reserved == 0  # released when the request ended
    pressure.reserved = 101  # other bodies being validated: the largest batch no longer fits, unread
    status, body, _ = call(layer, "/recommend_batch", chunks=[three])
    assert (
        status == 503
        and body["message"] == "overloaded: this worker's queue has no room for this request; retry shortly"
    )


def _through_rewriting(messages: list[dict]) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def run():
        out = rewriting(send)
        for message in messages:
            await out(message)

    asyncio.run(run())
    return sent


def test_an_answer_sent_in_chunks_without_a_length_leaves_as_one_body_with_its_length():
    """BentoML sends its JSON answers as an iterable (header, chunks, an empty last chunk): the edge sends
    them whole, so uvicorn writes a plain body, not chunked encoding."""
    sent = _through_rewriting(
        [
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]},
            {"type": "http.response.body", "body": b'{"a": ', "more_body": True},
            {"type": "http.response.body", "body": memoryview(b"1}"), "more_body": True},
            {"type": "http.response.body", "body": b"", "more_body": False},
        ]
    )
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"8")],
        },
        {"type": "http.response.body", "body": b'{"a": 1}'},
    ]


@pytest.mark.parametrize(
    "start",
    [
        {"type": "http.response.start", "status": 200, "headers": [(b"Content-Length", b"2")]},
        {"type": "http.response.start", "status": 200, "headers": [(b"transfer-encoding", b"chunked")]},
        {"type": "http.response.start", "status": 204, "headers": []},
    ],
    ids=["sized", "chunked on purpose", "no content"],
)
def test_sized_and_bodiless_answers_pass_as_they_are(start):
    body = {"type": "http.response.body", "body": b"{}" if start["status"] == 200 else b""}
    assert _through_rewriting([start, body]) == [start, body]


def test_headers_given_as_any_iterable_reach_the_client():
    start = {"type": "http.response.start", "status": 200, "headers": iter([(b"content-type", b"application/json")])}
    sent = _through_rewriting([start, {"type": "http.response.body", "body": b"{}"}])
    assert sent[0]["headers"] == [(b"content-type", b"application/json"), (b"content-length", b"2")]
