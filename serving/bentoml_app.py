"""BentoML's ASGI app for a service, with two lookups it repeats on every request done once per worker.

``ServiceAppFactory.api_endpoint`` finds the method to call with
``getattr(instance, name).local``: the API method is a descriptor that builds
a new wrapper on every lookup, ``inspect.signature`` included. And
``_add_response_headers`` is wrapped by simple_di's ``inject``, which binds
its signature and resolves the logging format from the container on every
call. Together about 5% of a lone ``/recommend``'s CPU in a worker (issue 27:
``docs/bench/lone_request_cuts/bentoml_app_ab.txt``). Here the wrapper is
made once, after BentoML creates the instance, and the format is resolved
once; what each request gets is what BentoML would have built for it.

Private BentoML structure, held by the exact pin and checked in
:mod:`serving.internals`.
"""

from __future__ import annotations

import inspect
from typing import Any

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.responses import Response

# The function simple_di wraps: called with the format the container holds, it adds the same headers.
_ADD_RESPONSE_HEADERS = inspect.unwrap(ServiceAppFactory._add_response_headers)


class WorkerAppFactory(ServiceAppFactory):  # type: ignore[misc]
    """:class:`ServiceAppFactory` with the per-request lookups of a worker's lifetime made once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logging_format = BentoMLContainer.logging_formatting.get()

    async def create_instance(self, app: Any) -> None:
        await super().create_instance(app)
        instance = self._service_instance
        for name in self.service.apis:
            # An API method is a descriptor without __set__: a value of the same name in the instance's
            # __dict__ comes first, so api_endpoint's getattr finds the wrapper built here (as BentoML builds it
            # now that the instance and its proxy exist) instead of building a new one per request.
            try:
                instance.__dict__[name] = getattr(instance, name)
            except AttributeError:  # an API named like a proxy attribute (``close``): left to fail per request
                continue

    def _add_response_headers(self, resp: Response) -> None:
        _ADD_RESPONSE_HEADERS(self, resp, self._logging_format)


def build_app(service: Any, is_main: bool) -> Any:
    """What ``Service.to_asgi`` returns, built by :class:`WorkerAppFactory`."""
    service.inject_config()
    return WorkerAppFactory(service, is_main=is_main)()


def serve_with_worker_app(service: Any) -> None:
    """Give ``service`` a ``to_asgi`` that builds its app with :class:`WorkerAppFactory`.

    The split topology's stages call it directly; :func:`serving.edge.serve_behind_edge` calls it before it
    puts the edge around the app. A subclass that adds no state (private BentoML structure: serving/internals.py).
    """
    base = type(service)

    class WorkerAppService(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def to_asgi(self, is_main: bool = True) -> Any:
            return build_app(self, is_main)

    WorkerAppService.__name__ = WorkerAppService.__qualname__ = base.__name__
    service.__class__ = WorkerAppService
