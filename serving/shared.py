"""What ``service.py`` and ``split_service.py`` both do, written once: set-up, /feedback, shedding, the 404.

The services stay thin: they declare models, routes and BentoML settings, and
call these for everything the two topologies have in common, so the single
process and the split form cannot drift apart (same event log, same /feedback
answers, same 503 with ``Retry-After``).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

import bentoml
from threadpoolctl import threadpool_limits

from serving import heap
from serving.api_models import (
    BatchRequest,
    BatchResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelTags,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.batcher import Overloaded
from serving.events import EventLog, EventLogFull, Recorder
from serving.metrics import EVENTS_DROPPED
from serving.runtime import Runtime
from serving.settings import ServiceSettings

logger = logging.getLogger("recsys")


def worker_threads(settings: ServiceSettings) -> None:
    """How a worker's threads share the CPU, set before it loads anything.

    One BLAS/OpenMP thread per worker: requests are small, workers give the parallelism
    (and a BLAS pool per worker would fight over the cores with the other workers').
    The event loop, the probe thread and the pipeline (or stage) thread share one GIL:
    a short switch interval hands it over sooner (``RECSYS_GIL_SWITCH_MS``).
    """
    threadpool_limits(1)
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    die_with_parent()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when the process that started it dies (even by SIGKILL).

    BentoML starts each worker in a process group of its own, so killing ``bentoml serve`` with SIGKILL
    left its workers serving, orphaned, holding the port (a restart then failed with EADDRINUSE).
    Linux sends it when the parent *thread* that started the worker ends; circus starts workers from
    its main thread, which lives as long as the server. A no-op where ``prctl`` is not available.
    (The parent dying before this call is not caught: in a container ``bentoml serve`` may be PID 1,
    so a parent of 1 tells nothing.)
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return


def start_runtime(settings: ServiceSettings, ranker_tag: str, candidates_tag: str) -> Runtime:
    """The pipeline a worker serves: its threads set first (:func:`worker_threads`), then loaded, then refreshed."""
    worker_threads(settings)
    runtime = Runtime.from_store(ranker_tag, candidates_tag, settings.feature_store, settings.n_candidates)
    settle_and_refresh(runtime, settings)
    return runtime


class Refreshing(Protocol):
    """What a worker loads and keeps fresh: the whole pipeline, or the split topology's candidate stage."""

    def start_refresh(self, every_seconds: float, after_swap: Callable[[], None] | None = None) -> None: ...


def settle_and_refresh(loaded: Refreshing, settings: ServiceSettings) -> None:
    """Move what a worker loaded out of full collections' way, then start its feature refresh (settled after each swap).

    See serving/heap.py for why settling matters to p99.
    """
    heap.settle(give_back=True)  # nothing is served yet
    loaded.start_refresh(settings.refresh_seconds, after_swap=heap.settle)


def recorder_from(settings: ServiceSettings) -> Recorder:
    """Impressions and feedback to the event log, or a recorder that records nothing when the log is off."""
    log = settings.event_log
    if not log:
        return Recorder(None)
    return Recorder(EventLog(log, settings.event_flush_rows, settings.event_flush_seconds, on_drop=_count_dropped))


def _count_dropped(kind: str, rows: int) -> None:
    EVENTS_DROPPED.labels(kind=kind).inc(rows)


def record_impressions(recorder: Recorder, responses: list[RecommendResponse]) -> None:
    """Log what was shown. Logging never fails an answer: in the batcher's call, that would compute it again."""
    try:
        recorder.impressions(responses)
    except Exception:
        logger.exception("event log: the impressions of %d answers could not be recorded", len(responses))


def record_feedback(recorder: Recorder, request: FeedbackRequest, ctx: bentoml.Context) -> FeedbackResponse:
    """The /feedback answer: events appended to the event log, or 503 when there is no log to append to."""
    if not recorder.enabled:
        ctx.response.status_code = 503
        return FeedbackResponse(
            accepted=0, status="error", message="the event log is off (RECSYS_EVENT_LOG is empty): nothing recorded"
        )
    try:
        return FeedbackResponse(accepted=recorder.feedback(request.events))
    except EventLogFull as error:
        # Never a 200 for an event that is then dropped: the client keeps it and tries again.
        ctx.response.status_code = 503
        ctx.response.headers["Retry-After"] = str(error.retry_after)
        return FeedbackResponse(accepted=0, status="error", message=str(error))


def shed(ctx: bentoml.Context, error: Overloaded) -> None:
    """503 with Retry-After: the client may try again shortly, nothing was computed."""
    ctx.response.status_code = 503
    ctx.response.headers["Retry-After"] = str(error.retry_after)


Answer = Callable[[list[RecommendRequest]], Awaitable[list[RecommendResponse]]]


async def recommend_or_shed(ctx: bentoml.Context, request: RecommendRequest, answer: Answer) -> RecommendResponse:
    """/recommend: ``answer``'s response, or 503 with Retry-After in the API's envelope when it is overloaded."""
    try:
        return (await answer([request]))[0]
    except Overloaded as error:
        shed(ctx, error)
        return RecommendResponse(user_id=request.user_id, recommendations=[], status="error", message=str(error))


async def batch_or_shed(ctx: bentoml.Context, batch: BatchRequest, answer: Answer) -> BatchResponse:
    """/recommend_batch: as :func:`recommend_or_shed`, for a batch."""
    try:
        return BatchResponse(results=await answer(batch.requests))
    except Overloaded as error:
        shed(ctx, error)
        return BatchResponse(results=[], status="error", message=str(error))


def unknown_item(ctx: bentoml.Context, request: SimilarItemsRequest, tags: ModelTags) -> SimilarItemsResponse:
    """404 for /similar_items on an item outside the model's catalogue."""
    ctx.response.status_code = 404
    return SimilarItemsResponse(
        item_id=request.item_id,
        recommendations=[],
        status="error",
        message=f"unknown item_id {request.item_id!r}: not in the model's catalogue",
        model=tags,
    )
