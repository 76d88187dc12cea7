"""The recommendation API: a thin BentoML service over the two-stage pipeline.

Both models are declared at class scope so ``bentoml build`` packs them.
Loading, compatibility checks and feature refresh live in
``serving.runtime``; the pipeline itself in ``stages``.
"""

from __future__ import annotations

import bentoml

from serving.guards import RequestGuard
from serving.responses import answer, ranked
from serving.runtime import Runtime, in_bentoml_worker, paired_candidates_tag, preflight
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    ModelInfo,
    ModelTags,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.settings import get_settings

settings = get_settings()
API_ROUTES = ("/recommend", "/recommend_batch", "/similar_items", "/model_info")
CANDIDATES_TAG = paired_candidates_tag(settings.ranker_tag, settings.candidates_tag)
# Checked here, in the process that `bentoml serve` starts first: a failure in a
# worker's __init__ only restarts the worker, while this makes the server exit.
# Workers skip it: the server already checked, and __init__ loads the same again.
if not in_bentoml_worker():
    preflight(settings.ranker_tag, CANDIDATES_TAG, settings.feature_store)


TLS = {"enabled": True, "certfile": settings.ssl_certfile, "keyfile": settings.ssl_keyfile}


@bentoml.service(
    name="recsys",
    workers=settings.workers,
    traffic={"timeout": settings.timeout_seconds},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [] if settings.trace_requests else list(API_ROUTES)},
    ssl=TLS if settings.ssl_certfile else {"enabled": False},
)
class Recommender:
    """Two-stage recommendations: ALS candidates re-ranked by CatBoost."""

    ranker_model = bentoml.models.BentoModel(settings.ranker_tag)
    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        self.runtime = Runtime(self.candidates_model, self.ranker_model, settings.feature_store, settings.n_candidates)
        self.tags = ModelTags(**self.runtime.tags)
        self.runtime.start_refresh(settings.refresh_seconds)

    @bentoml.on_shutdown
    def stop(self) -> None:
        self.runtime.stop_refresh()

    def _answer(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        return answer(self.runtime.pipeline, requests, self.tags)

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for one user (popular items for a user the model has not seen)."""
        return self._answer([request])[0]

    @bentoml.api
    async def recommend_batch(self, batch: BatchRequest, /) -> BatchResponse:
        """Several recommendation requests, answered in order and scored together."""
        return BatchResponse(results=self._answer(batch.requests))

    @bentoml.api
    async def similar_items(self, request: SimilarItemsRequest, /, ctx: bentoml.Context) -> SimilarItemsResponse:
        """Items whose ALS factors are closest: "people who liked this also liked"."""
        pipeline = self.runtime.pipeline
        index = pipeline.candidates.item_index.get(request.item_id)
        if index is None:
            ctx.response.status_code = 404
            return SimilarItemsResponse(
                item_id=request.item_id,
                recommendations=[],
                status="error",
                message=f"unknown item_id {request.item_id!r}: not in the model's catalogue",
                model=self.tags,
            )
        similar = pipeline.similar(index, request.k)
        return SimilarItemsResponse(item_id=request.item_id, recommendations=ranked(*similar), model=self.tags)

    @bentoml.api(route="/model_info")
    async def model_info(self) -> ModelInfo:
        """Tags, training time, data fingerprint, offline metrics, feature version."""
        runtime = self.runtime
        meta = runtime.ranker_meta
        return ModelInfo(
            model=self.tags,
            trained_at=meta["trained_at"],
            data_fingerprint=meta["data_fingerprint"],
            dataset=meta["dataset"],
            n_users=len(runtime.candidates.user_ids),
            n_items=runtime.candidates.n_items,
            n_candidates=runtime.pipeline.n_candidates,
            feature_version=runtime.view.version,
            feature_source=runtime.feature_source,
            feature_refresh_error=runtime.refresh_error,
            features=runtime.names.all,
            evaluation=meta.get("evaluation", {}),
        )


Recommender.add_asgi_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key)
