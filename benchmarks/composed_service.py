"""The stages as two BentoML services (runners' successor), for the topology benchmark.

``CandidateStage`` serves ALS candidates; ``ComposedRecommender`` calls it
through ``bentoml.depends`` and re-ranks. Same models, features and
pipeline code as ``service.py``; only the process boundary differs::

    bentoml serve benchmarks.composed_service:ComposedRecommender --port 3000

Not the default: see BENCHMARKS.md for what it costs and why.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np

from serving.api_models import RecommendRequest, RecommendResponse
from serving.responses import to_queries, to_responses
from serving.runtime import Runtime, paired_candidates_tag
from serving.settings import get_settings
from serving.split import batch_from_json, batch_to_json
from stages.candidates import CandidateModel
from stages.card import CandidatesCard
from stages.pipeline import Query

settings = get_settings()
CANDIDATES_TAG = paired_candidates_tag(settings.ranker_tag, settings.candidates_tag)
QUIET = {"logging": {"access": {"enabled": False}}, "traffic": {"timeout": settings.timeout_seconds}}


@bentoml.service(name="recsys-candidate-stage", workers=settings.workers, **QUIET)
class CandidateStage:
    """Stage one on its own: ALS top-N for known users."""

    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        card = CandidatesCard.from_metadata(self.candidates_model.info.metadata)
        self.model = CandidateModel.load(Path(self.candidates_model.path), card.params)

    @bentoml.api
    async def candidates(
        self, user_ids: list[str], n: int, exclude_seen: bool, exclude_items: list[list[str]]
    ) -> dict[str, list[list[float | None]]]:
        users = np.array([self.model.user_index[u] for u in user_ids], dtype=np.int64)
        index = self.model.item_index
        exclude = [np.array([index[i] for i in ids if i in index], dtype=np.int64) for ids in exclude_items]
        batch = self.model.top_n(users, n, exclude_seen, exclude)
        return batch_to_json(batch)


@bentoml.service(name="recsys-composed", workers=settings.workers, **QUIET)
class ComposedRecommender:
    """Stage two in the entry service, calling stage one over HTTP."""

    stage = bentoml.depends(CandidateStage)
    ranker_model = bentoml.models.BentoModel(settings.ranker_tag)
    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        self.runtime = Runtime.from_store(
            str(self.ranker_model.tag), str(self.candidates_model.tag), settings.feature_store
        )
        self.tags = self.runtime.tags

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        pipeline = self.runtime.pipeline
        query: Query = to_queries([request])[0]
        if query.user_id not in pipeline.candidates.user_index:
            return to_responses(pipeline.recommend([query]), self.tags)[0]
        found = await self.stage.to_async.candidates(
            user_ids=[query.user_id],
            n=pipeline.n_candidates,
            exclude_seen=query.exclude_seen,
            exclude_items=[query.exclude_items],
        )
        return to_responses(pipeline.rank([query], batch_from_json(found)), self.tags)[0]
