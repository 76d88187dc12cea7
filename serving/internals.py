"""Every private BentoML and uvicorn name this project relies on, checked in one place.

Held only by the exact pins (``bentoml==1.4.40``, ``uvicorn==0.54.0``). Each entry says what
we use and where; :func:`problems` looks each up the way the code uses it, so an upgrade that
moves or changes one fails the unit suite (``tests/unit/serving/test_internals.py``) with one
line per name, instead of an ``AttributeError`` in a worker or a limit silently off.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Internal:
    """One private name: what it is, where we rely on it, and how to tell it is still there."""

    name: str
    used_by: str
    present: Callable[[], bool]


def _attribute(module: str, path: str) -> Callable[[], bool]:
    def present() -> bool:
        target: object = importlib.import_module(module)
        for part in path.split("."):
            target = getattr(target, part)
        return True

    return present


def _assigns(module: str, owner: str, attributes: tuple[str, ...]) -> Callable[[], bool]:
    """The class (or function) ``owner`` of ``module`` still sets each ``self.<attribute>`` in its source."""

    def present() -> bool:
        source = inspect.getsource(getattr(importlib.import_module(module), owner))
        return all(f"self.{attribute}" in source for attribute in attributes)

    return present


def _http_protocols_auto() -> bool:
    from uvicorn import config

    return "auto" in config.HTTP_PROTOCOLS and "import_from_string(HTTP_PROTOCOLS" in inspect.getsource(config)


def _worker_app_factory() -> bool:
    """What serving/bentoml_app.py relies on: where BentoML builds the app, makes the instance, finds an API's
    method and adds its headers, and that an API method is a descriptor an instance attribute overrides."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk import Service
    from _bentoml_sdk.method import APIMethod
    from bentoml._internal.configuration.containers import BentoMLContainer

    headers = inspect.signature(inspect.unwrap(ServiceAppFactory._add_response_headers)).parameters
    instance = inspect.getsource(ServiceAppFactory.create_instance)
    to_asgi = [line.strip() for line in inspect.getsource(Service.to_asgi).splitlines()[1:] if line.strip()]
    return (
        list(headers) == ["self", "resp", "logging_format"]
        and headers["logging_format"].default == BentoMLContainer.logging_formatting
        and "getattr(self._service_instance, name).local" in inspect.getsource(ServiceAppFactory.api_endpoint)
        and "self._service_instance = self.service()" in instance
        and "self._service_instance.__self_proxy__ = proxy" in instance
        and to_asgi  # build_app does what to_asgi does, and to_asgi does nothing else
        == [
            "from _bentoml_impl.server.app import ServiceAppFactory",
            "self.inject_config()",
            "factory = ServiceAppFactory(self, is_main=is_main)",
            "return factory()",
        ]
        and not hasattr(APIMethod, "__set__")
    )


INTERNALS = (
    Internal(
        "_bentoml_impl.server.app.ServiceAppFactory (create_instance, _service_instance, api_endpoint's method "
        "lookup, _add_response_headers' injected logging_format), Service.to_asgi and APIMethod's __get__",
        "serving/bentoml_app.py (a worker's per-request lookups made once)",
        _worker_app_factory,
    ),
    Internal(
        "bentoml._internal.configuration.containers.BentoMLContainer.prometheus_multiproc_dir",
        "serving/startup.py (a Prometheus directory per server)",
        _attribute("bentoml._internal.configuration.containers", "BentoMLContainer.prometheus_multiproc_dir.set"),
    ),
    Internal(
        "_bentoml_sdk.service.factory.Service.to_asgi / openapi_spec (the class swap)",
        "serving/edge.py (the edge wraps the app BentoML builds)",
        lambda: all(hasattr(importlib.import_module("_bentoml_sdk").Service, a) for a in ("to_asgi", "openapi_spec")),
    ),
    Internal(
        "uvicorn.config.HTTP_PROTOCOLS['auto']",
        "serving/connection.py (connection limits in uvicorn's protocol)",
        _http_protocols_auto,
    ),
    Internal(
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",
        "serving/connection.py (the guarded protocol subclasses it)",
        _attribute("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.on_headers_complete"),
    ),
    Internal(
        "_bentoml_impl.client.proxy2.SessionManager (_session, _created_at, _request_count, _app, _timeout, "
        "_make_client, _should_refresh)",
        "serving/split_client.py (sessions retired without cutting calls in flight)",
        _assigns(
            "_bentoml_impl.client.proxy2",
            "SessionManager",
            ("_session", "_created_at", "_request_count", "_app", "_timeout", "_make_client", "_should_refresh"),
        ),
    ),
    Internal(
        "_bentoml_impl.client.proxy2.AsyncClient._session_manager",
        "serving/split_client.py (harden() replaces it)",
        _assigns("_bentoml_impl.client.proxy2", "AsyncClient", ("_session_manager",)),
    ),
    Internal(
        "bentoml._internal.models.model.ModelStore (and its _path) as BentoMLContainer.model_store",
        "serving/startup.py (the child check reads the model store a Bento was served from)",
        lambda: (
            hasattr(
                importlib.import_module(
                    "bentoml._internal.configuration.containers"
                ).BentoMLContainer.model_store.get(),
                "_path",
            )
            and hasattr(importlib.import_module("bentoml._internal.models.model"), "ModelStore")
        ),
    ),
    Internal(
        "logger bentoml._internal.server.http_app",
        "serving/logs.py (its API errors rate-limited)",
        _attribute("bentoml._internal.server.http_app", "log_exception"),
    ),
)


def problems() -> list[str]:
    """One line per private name that is gone or changed; empty when every one is as relied on."""
    out = []
    for internal in INTERNALS:
        try:
            ok = internal.present()
        except (ImportError, AttributeError, OSError, TypeError) as error:
            ok, reason = False, f"{type(error).__name__}: {error}"
        else:
            reason = "not as relied on"
        if not ok:
            out.append(f"{internal.name} ({internal.used_by}): {reason}")
    return out
