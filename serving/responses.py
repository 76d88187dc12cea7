"""From pipeline answers to API responses; shared by the service and the FastAPI reference."""

from __future__ import annotations

from serving.api_models import ModelTags, RecommendedItem, RecommendRequest, RecommendResponse
from serving.events import new_request_id
from serving.metrics import COLD_STARTS, FILTERED_ITEMS
from stages.pipeline import POPULAR, Query, RecentEvent, Recommendation, TwoStageRecommender


def ranked(item_ids: list[str], scores: list[float], titles: list[str | None]) -> list[RecommendedItem]:
    """Items with 1-based ranks in the order given."""
    return [
        RecommendedItem(item_id=i, score=s, rank=r, title=t)
        for r, (i, s, t) in enumerate(zip(item_ids, scores, titles, strict=True), start=1)
    ]


def answer(pipeline: TwoStageRecommender, requests: list[RecommendRequest], tags: ModelTags) -> list[RecommendResponse]:
    """Run validated requests through the pipeline (together) and count what the metrics need."""
    queries = to_queries(requests)
    FILTERED_ITEMS.inc(sum(pipeline.filtered_count(q) for q in queries))
    return to_responses(pipeline.recommend(queries), tags)


def to_queries(requests: list[RecommendRequest]) -> list[Query]:
    """Validated API requests as pipeline queries."""
    return [
        Query(
            r.user_id,
            r.k,
            r.exclude_seen,
            r.exclude_items,
            r.user_attributes,
            [RecentEvent(e.item_id, e.timestamp, e.weight) for e in r.recent_items],
        )
        for r in requests
    ]


def to_responses(recommendations: list[Recommendation], tags: ModelTags) -> list[RecommendResponse]:
    """Pipeline answers in the API's envelope (cold starts counted)."""
    responses = []
    for recommendation in recommendations:
        if recommendation.strategy == POPULAR:
            COLD_STARTS.inc()
        responses.append(
            RecommendResponse(
                user_id=recommendation.user_id,
                recommendations=ranked(recommendation.item_ids, recommendation.scores, recommendation.titles),
                message=recommendation.message,
                strategy=recommendation.strategy,
                model=tags,
                request_id=new_request_id(),
            )
        )
    return responses
