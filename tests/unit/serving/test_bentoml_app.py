"""BentoML's app built by serving/bentoml_app.py: the answers and headers of BentoML's own, the lookups made once."""

from __future__ import annotations

import asyncio

import bentoml
import httpx
from _bentoml_impl.server.app import ServiceAppFactory

from serving.bentoml_app import WorkerAppFactory


@bentoml.service(name="tiny")
class Tiny:
    @bentoml.api
    def double(self, x: int) -> int:
        return 2 * x

    @bentoml.api
    async def negate(self, x: int) -> int:
        return -x


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


def test_answers_and_headers_are_bentomls_own():
    # Metrics off in both: two apps in one process would register BentoML's metrics twice.
    ours, _ = serve(WorkerAppFactory(Tiny, is_main=True, enable_metrics=False))
    theirs, _ = serve(ServiceAppFactory(Tiny, is_main=True, enable_metrics=False))
    assert [r.json() for r in ours] == [r.json() for r in theirs] == [42, -21, 42, -21]
    for mine, stock in zip(ours, theirs, strict=True):
        assert mine.status_code == stock.status_code == 200
        assert sorted(mine.headers) == sorted(stock.headers)
        assert mine.headers["server"] == stock.headers["server"] == "BentoML Service/tiny"
        assert len(mine.headers["x-bentoml-request-id"]) == len(stock.headers["x-bentoml-request-id"]) == 16
    assert len({r.headers["x-bentoml-request-id"] for r in ours}) == 4  # each request its own id, as before


def test_each_api_method_is_looked_up_once_per_worker():
    _, instance = serve(WorkerAppFactory(Tiny, is_main=True, enable_metrics=False))
    for name in ("double", "negate"):
        assert getattr(instance, name) is getattr(instance, name)  # the descriptor would build a new one each time
    assert instance.double.local(x=4) == 8
    assert asyncio.run(instance.negate.local(x=4)) == -4
