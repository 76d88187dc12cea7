"""The recommendation API: a thin BentoML service over the two-stage pipeline.

Both models are declared at class scope so ``bentoml build`` packs them.
Loading, compatibility checks and feature refresh live in
``serving.runtime``; the pipeline itself in ``stages``.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import bentoml

from serving import logs, startup
from serving.api_models import (
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
    query_cost,
)
from serving.batcher import PRESSURE, MicroBatcher
from serving.connection import ConnectionLimits
from serving.edge import EdgeLimits, serve_behind_edge
from serving.experiments import ARM_HEADER, experiments_from
from serving.health import start_probes
from serving.responses import check_requests, similar_response, similar_to
from serving.runtime import paired_candidates_tag
from serving.settings import get_settings
from serving.shadow_process import ShadowProcess
from serving.shared import (
    batch_or_shed,
    recommend_or_shed,
    record_feedback,
    record_impressions,
    recorder_from,
    start_runtime,
    unknown_item,
)

settings = get_settings()
logs.install()  # client errors as one WARNING line, floods rate-limited (serving/logs.py)
API_ROUTES = ("/recommend", "/recommend_batch", "/similar_items", "/feedback", "/model_info")
# Resolved at import: BentoML packs only models declared at class scope
# (BentoML #4702, #5319), so the pair must be known before the class exists.
CANDIDATES_TAG = paired_candidates_tag(settings.ranker_tag, settings.candidates_tag)
if not startup.in_worker():
    # The server process refuses to start on a mismatched pair (see serving/startup.py);
    # workers skip it, since __init__ loads the same again.
    startup.check_in_child()  # in a child: what it loads does not stay in this process
    startup.own_metrics_dir()


TLS = {
    "enabled": True,
    "certfile": settings.ssl_certfile,
    "keyfile": settings.ssl_keyfile,
    "ciphers": settings.ssl_ciphers,
}


@bentoml.service(
    name="recsys",
    workers=settings.workers,
    traffic={"timeout": settings.timeout_seconds, "max_concurrency": settings.max_concurrency},
    backlog=settings.backlog,
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [] if settings.trace_requests else list(API_ROUTES)},
    ssl=TLS if settings.ssl_certfile else {"enabled": False},
)
class Recommender:
    """Two-stage recommendations: ALS candidates re-ranked by CatBoost."""

    ranker_model = bentoml.models.BentoModel(settings.ranker_tag)
    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        self.runtime = start_runtime(settings, str(self.ranker_model.tag), str(self.candidates_model.tag))
        self.tags = self.runtime.tags
        self.recorder = recorder_from(settings)
        # A shadow is scored in a process of its own, and only where its lists are logged (serving/shadow_process.py)
        shadows = ShadowProcess() if self.recorder.enabled else None
        self.experiments = experiments_from(settings, self.runtime, shadows=shadows)
        # The pipeline off the event loop, requests queued meanwhile answered together (serving/batcher.py).
        self.batcher = MicroBatcher(
            self._answer,
            settings.max_batch_queries,
            settings.max_pending_queries,
            settings.queue_timeout_seconds,
            PRESSURE,
            query_cost,
            settings.max_queued_seconds,
            settings.inline_units,
        )
        self.health = None  # the probe port, opened once the event loop runs (open_probe_port)

    @bentoml.on_startup
    async def open_probe_port(self) -> None:
        """/livez and /readyz on RECSYS_HEALTH_PORT, answered off the event loop (serving/health.py)."""
        self.health = start_probes(
            settings.health_host,
            settings.health_port,
            settings.health_stale_seconds,
            ready=lambda: True,  # this hook runs after __init__ loaded the models; stop() makes it False
        )

    @bentoml.on_shutdown
    def stop(self) -> None:
        if self.health is not None:
            self.health.stop()
        self.runtime.stop_refresh()
        self.experiments.stop()
        self.batcher.close()
        self.recorder.close()

    def _answer(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        """One pipeline call for every queued request (in the batcher's thread, or inline for a lone one)."""
        responses = self.experiments.respond(requests)
        record_impressions(self.recorder, responses)
        return responses

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /, ctx: bentoml.Context) -> RecommendResponse:
        """Top-k items for one user (popular items for a user the model has not seen)."""
        check_requests(self.runtime.pipeline, [request], batch=False)
        self.experiments.force([request], ctx.request.headers.getlist(ARM_HEADER), batch=False)
        return await recommend_or_shed(ctx, request, self.batcher.submit)

    @bentoml.api
    async def recommend_batch(self, batch: BatchRequest, /, ctx: bentoml.Context) -> BatchResponse:
        """Several recommendation requests, answered in order and scored together."""
        check_requests(self.runtime.pipeline, batch.requests, batch=True)
        self.experiments.force(batch.requests, ctx.request.headers.getlist(ARM_HEADER), batch=True)
        return await batch_or_shed(ctx, batch, self.batcher.submit)

    @bentoml.api
    async def similar_items(self, request: SimilarItemsRequest, /, ctx: bentoml.Context) -> SimilarItemsResponse:
        """Items whose ALS factors are closest: "people who liked this also liked"."""
        pipeline = self.runtime.pipeline
        index = pipeline.candidates.item_index.get(request.item_id)
        if index is None:
            return unknown_item(ctx, request, self.tags)
        similar = await self.batcher.call(similar_to, pipeline, index, request)
        return similar_response(request, similar, self.tags)

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /, ctx: bentoml.Context) -> FeedbackResponse:
        """What users did with items (one event or many), appended to the event log for the next training run."""
        return record_feedback(self.recorder, request, ctx)

    @bentoml.api(route="/model_info")
    async def model_info(self) -> ModelInfo:
        """Tags, training time, data fingerprint, offline metrics, feature version, the experiment served."""
        return self.runtime.info().model_copy(update={"experiment": self.experiments.info()})


# The edge wraps the app BentoML builds, outside its metrics middleware (see serving/edge.py).
# While the batcher's queue has no room for a request, the edge sheds it before reading its body.
EDGE = replace(
    EdgeLimits.from_settings(settings, set(API_ROUTES)),
    queued_routes=MappingProxyType({"/recommend": 1, "/recommend_batch": MAX_BATCH}),
    pressure=PRESSURE,
)
serve_behind_edge(Recommender, EDGE, ConnectionLimits.from_settings(settings))
