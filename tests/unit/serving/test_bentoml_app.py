"""BentoML's app built by serving/bentoml_app.py: the answers and headers of BentoML's own, the lookups made once."""

from __future__ import annotations

import asyncio

import bentoml
import httpx
import pytest
from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer

from serving import bentoml_app
from serving.bentoml_app import WorkerAppFactory, serve_with_worker_app


@bentoml.service(name="tiny")
class Tiny:
    @bentoml.api
    def double(self, x: int) -> int:
        return 2 * x

    @bentoml.api
    async def negate(self, x: int) -> int:
        return -x


@pytest.fixture(autouse=True)
def tiny_config():
    Tiny.inject_config()  # what Service.to_asgi does before it builds the app


def serve(factory: ServiceAppFactory) -> tuple[list[httpx.Response], object]:
    """Start the app's lifespan (BentoML creates the service instance there), call each API twice; the answers and
    the instance that gave them."""

    async def run() -> tuple[list[httpx.Response], object]:
        app = factory()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tiny") as client:
                answers = [await client.post(f"/{name}", json={"x": 21}) for name in ("double", "negate") * 2]
            return answers, factory._service_instance

    return asyncio.run(run())


def built(kind: type[ServiceAppFactory]) -> ServiceAppFactory:
    # Metrics off: two apps in one process would register BentoML's metrics twice.
    return kind(Tiny, is_main=True, enable_metrics=False)


def test_answers_and_headers_are_bentomls_own():
    (ours, _), (theirs, _) = serve(built(WorkerAppFactory)), serve(built(ServiceAppFactory))
    assert [r.json() for r in ours] == [r.json() for r in theirs] == [42, -21, 42, -21]
    for mine, stock in zip(ours, theirs, strict=True):
        assert mine.status_code == stock.status_code == 200
        assert sorted(mine.headers) == sorted(stock.headers)
        assert mine.headers["server"] == stock.headers["server"] == "BentoML Service/tiny"
        assert len(mine.headers["x-bentoml-request-id"]) == len(stock.headers["x-bentoml-request-id"]) == 16
    assert len({r.headers["x-bentoml-request-id"] for r in ours}) == 4  # each request its own id, as before


def test_each_api_method_is_looked_up_once_per_worker():
    (_, ours), (_, theirs) = serve(built(WorkerAppFactory)), serve(built(ServiceAppFactory))
    for name in ("double", "negate"):
        # BentoML's descriptor builds the local caller (inspect.signature and all) on every lookup.
        assert getattr(theirs, name).local is not getattr(theirs, name).local
        assert getattr(ours, name).local is getattr(ours, name).local
    assert ours.double.local(x=4) == 8
    assert asyncio.run(ours.negate.local(x=4)) == -4


def test_the_logging_format_is_read_once_per_worker_not_per_request(monkeypatch):
    reads = {"n": 0}
    read = BentoMLContainer.logging_formatting.get

    def counted():
        reads["n"] += 1
        return read()

    monkeypatch.setattr(BentoMLContainer.logging_formatting, "get", counted)
    for kind, per_worker in ((WorkerAppFactory, 1), (ServiceAppFactory, 0)):
        reads["n"] = 0
        factory = built(kind)
        assert reads["n"] == per_worker
        answers, _ = serve(factory)
        assert reads["n"] == (per_worker if kind is WorkerAppFactory else len(answers))


@bentoml.service(name="clash")
class Clash:
    @bentoml.api
    def close(self, x: int) -> int:  # named like an attribute of BentoML's proxy: its lookup fails
        return x

    @bentoml.api
    def fine(self, x: int) -> int:
        return x


def test_an_api_named_like_a_proxy_attribute_fails_alone_as_in_bentoml():
    Clash.inject_config()

    async def run(kind: type[ServiceAppFactory]) -> list[int]:
        app = kind(Clash, is_main=True, enable_metrics=False)()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://clash") as client:
                return [(await client.post(f"/{name}", json={"x": 1})).status_code for name in ("close", "fine")]

    assert asyncio.run(run(WorkerAppFactory)) == asyncio.run(run(ServiceAppFactory)) == [500, 200]


def test_a_service_no_edge_wraps_builds_the_worker_app_too(monkeypatch):
    @bentoml.service(name="stage")
    class Stage:
        @bentoml.api
        def echo(self, x: int) -> int:
            return x

    built_by: list[type] = []

    class Recorded(WorkerAppFactory):
        def __init__(self, *args, **kwargs) -> None:
            built_by.append(type(self))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(bentoml_app, "WorkerAppFactory", Recorded)
    serve_with_worker_app(Stage)
    assert type(Stage).__name__ == "Service" and Stage.name == "stage"
    Stage.to_asgi(is_main=False)
    assert built_by == [Recorded]
