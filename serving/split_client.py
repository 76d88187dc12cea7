"""Calls between the services of the split topology, with no request lost to a dropped connection.

Why requests were lost (BentoML 1.4.40, ``_bentoml_impl/client/proxy2.py``)
-------------------------------------------------------------------------
``bentoml.depends`` gives the entry service a ``RemoteProxy`` whose
``SessionManager`` replaces its aiohttp session every ``max_requests`` calls
(default 100) or ``max_age`` seconds (default 300), and closes the old session
at once: ``await self._session.close()`` closes every connection of it,
including those still carrying other requests. Those callers get
``aiohttp.ServerDisconnectedError`` / ``ClientConnectionError`` (or
``RuntimeError: Session is closed``) and the entry answers 500. Nothing is in
flight alongside at one connection, hence 0 errors there and 3-13% at 8-64
connections (BENCHMARKS.md). A second, rarer cause is the idle keep-alive
mismatch: the session's connector keeps idle connections for aiohttp's default
15 s while the stage's uvicorn closes them after ``--timeout-keep-alive`` 5 s,
so a connection reused after 5-15 s idle may be closed under the request.

Upstream: BentoML issue #4971 (intermittent "Server disconnected" between
services) and PR #5698 (keep-alive under the server's, retry once; open, not in
1.4.40). What this module does, until a release has it:

1. :class:`SessionManager` retires a session without cutting it: the new one
   serves new calls, the old one is closed after the traffic timeout, when
   every call it carried is over. Its connectors keep idle connections 4 s,
   under uvicorn's 5 s.
2. :func:`call` retries a call that failed at the connection level (twice at
   most). The stage calls are pure functions of their input, so a repeat
   cannot do anything twice.

Sessions are still recycled (every :attr:`SplitSettings.max_requests` calls or
``max_age`` seconds), so on Kubernetes new stage pods behind a Service get
connections, and so traffic, within a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import bentoml
from _bentoml_impl.client import proxy2  # private: serving/internals.py
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.batcher import Overloaded

logger = logging.getLogger("recsys")
T = TypeVar("T")
KEEPALIVE_SECONDS = 4.0  # under uvicorn's --timeout-keep-alive default of 5 s (BentoML PR #5698)
RETRIES = 2


class SplitSettings(BaseSettings):
    """Where the stage services are and how the entry talks to them (``RECSYS_SPLIT_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_SPLIT_", extra="ignore")

    candidates_url: str | None = Field(
        None, description="candidates service URL (Kubernetes: http://recsys-candidates:3000); unset: served alongside"
    )
    ranker_url: str | None = Field(None, description="ranker service URL (http://recsys-ranker:3000); unset: alongside")
    candidates_workers: int = Field(1, ge=1, le=64)
    ranker_workers: int = Field(1, ge=1, le=64)
    max_requests: int = Field(10_000, ge=1, description="calls per client session before a new one")
    max_age: float = Field(60.0, gt=0, description="seconds per client session (new stage pods get traffic)")
    hardened: bool = Field(True, description="False: BentoML's client as released, to measure what it loses")


class SessionManager(proxy2.SessionManager):
    """BentoML's session manager, retiring sessions without closing them under calls in flight."""

    def __init__(self, old: proxy2.SessionManager, max_requests: int, max_age: float) -> None:
        # Take over the configuration of the one BentoML built (URL, headers, timeout, in-process app).
        self.__dict__.update(old.__dict__)
        self.max_requests, self.max_age = max_requests, max_age
        self._retired: set[asyncio.Task] = set()
        self._old: set[aiohttp.ClientSession] = set()

    def _make_client(self) -> aiohttp.ClientSession:
        session = super()._make_client()
        connector = session.connector
        if self._app is None and connector is not None:
            # Our keep-alive instead of aiohttp's 15 s; the connector is fresh, nothing uses it yet.
            connector._keepalive_timeout = KEEPALIVE_SECONDS
        return session

    async def get_session(self) -> aiohttp.ClientSession:
        if self._session is not None and self._should_refresh():
            old, self._session = self._session, None
            self._old.add(old)
            task = asyncio.get_running_loop().create_task(self._close_later(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        if self._session is None:
            self._session = self._make_client()
            self._created_at = asyncio.get_running_loop().time()
            self._request_count = 0
        self._request_count += 1
        return self._session

    def _should_refresh(self) -> bool:
        return (
            asyncio.get_running_loop().time() - self._created_at > self.max_age
            or self._request_count > self.max_requests
        )

    async def _close_later(self, session: aiohttp.ClientSession) -> None:
        # Calls made on it end within the client timeout; then nothing uses it.
        await asyncio.sleep(self._timeout.total or 60)
        self._old.discard(session)
        await session.close()

    async def close(self) -> None:
        """At shutdown: the retired sessions too, now."""
        for task in list(self._retired):
            task.cancel()
        for session in list(self._old):
            await session.close()
        self._old.clear()
        await super().close()


def stage(service: Any, url: str | None) -> Any:
    """``bentoml.depends`` on a stage service: served alongside, or at ``url`` (Kubernetes Service name)."""
    return bentoml.depends(service, url=url) if url else bentoml.depends(service)


def harden(proxy: Any, max_requests: int, max_age: float) -> Any:
    """Give a ``bentoml.depends`` proxy our session manager (a no-op for an in-process dependency)."""
    client = getattr(proxy, "_async", None)
    old = getattr(client, "_session_manager", None)
    if isinstance(old, proxy2.SessionManager) and not isinstance(old, SessionManager):
        client._session_manager = SessionManager(old, max_requests, max_age)
    return proxy


UNREACHABLE_RETRY_AFTER = 5  # seconds: a stage pod restarting, or the next one coming up


def _reason(exc: BaseException) -> str:
    """The failure in a few words, without the exception's class or a traceback."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no answer"
    return text if not isinstance(exc, TimeoutError) else f"timed out ({text})"


async def call(method: Callable[..., Awaitable[T]], retries: int = RETRIES, **kwargs: Any) -> T:
    """Call a stage's endpoint; repeat it if the connection dropped under it (the stage calls are idempotent).

    A stage that sheds the call (503: its queue is full, the call waited past the queue
    timeout, or the stages' models are out of step during an update) raises
    :class:`Overloaded`: the entry answers 503 with ``Retry-After``, not 500, and does
    not repeat it (that would only add to the queue that refused it).
    """
    for attempt in range(retries + 1):
        try:
            return await method(**kwargs)
        except ServiceUnavailable as exc:
            raise Overloaded(f"a stage service shed the call: {exc.message[:200]}") from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            # A dropped connection, not a slow stage: a timeout is not repeated (it would double the load).
            if isinstance(exc, TimeoutError) or attempt == retries:
                # A stage that is down or rolling out: the client may retry shortly (503), not a 500 with a
                # traceback per request for the whole outage. One line per kind, rate-limited (serving/logs.py).
                logger.warning("a stage service cannot be reached: %s", _reason(exc))
                raise Overloaded(
                    "a stage service cannot be reached; try again shortly", retry_after=UNREACHABLE_RETRY_AFTER
                ) from None
            logger.warning("stage call dropped (%s: %s), retrying", type(exc).__name__, exc)
        except RuntimeError as exc:  # aiohttp: "Session is closed", a session closed under the call
            if "closed" not in str(exc) or attempt == retries:
                raise
            logger.warning("stage call on a closed session, retrying")
    raise AssertionError("unreachable")
