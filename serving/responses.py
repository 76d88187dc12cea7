"""From pipeline answers to API responses; shared by the service and the FastAPI reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from serving.api_models import (
    AttributeFilter,
    BecauseItem,
    ModelTags,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.events import new_request_id
from serving.metrics import COLD_STARTS, FILTERED_ITEMS
from stages import rules
from stages.pipeline import POPULAR, Explanation, Query, RecentEvent, Recommendation, TwoStageRecommender

if TYPE_CHECKING:
    from serving.runtime import Runtime


def ranked(
    item_ids: list[str],
    scores: list[float],
    titles: list[str | None],
    explanations: list[Explanation] | None = None,
    first_rank: int = 1,
) -> list[RecommendedItem]:
    """Items ranked in the order given from ``first_rank`` (with their explanations when there are some).

    A later page's ranks go on from the pages before it (offset 10: ranks 11-20), so pages join into one
    ranking and the event log's positions are places in it, as online metrics read them.
    """
    items = [
        RecommendedItem(item_id=i, score=s, rank=r, title=t)
        for r, (i, s, t) in enumerate(zip(item_ids, scores, titles, strict=True), start=first_rank)
    ]
    for item, why in zip(items, explanations or [], strict=False):
        item.because = [BecauseItem(item_id=i, title=t) for i, t in why.because]
        item.reasons = why.reasons
    return items


def answer(
    pipeline: TwoStageRecommender, requests: list[RecommendRequest], tags: ModelTags, popular: bool = False
) -> list[RecommendResponse]:
    """Run validated requests through the pipeline (together) and count what the metrics need.

    ``popular``: the popularity list for everyone (an experiment's baseline arm), not the two stages.

    Filters are checked where a request arrives (:func:`check_requests`), not again here. A filter the
    catalogue cannot apply only reaches this point if the catalogue changed since (a feature refresh) or
    the caller did not check (the FastAPI reference): it is still a 400 naming the field.
    """
    queries = to_queries(requests)
    try:
        filtered = sum(pipeline.filtered_count(q) for q in queries)
        recommendations = pipeline.popular_baseline(queries) if popular else pipeline.recommend(queries)
    except rules.RuleError:
        check_requests(pipeline, requests, batch=len(requests) > 1)  # the 400 for the request and field at fault
        raise
    responses = to_responses(recommendations, tags, count_cold_starts=not popular)
    FILTERED_ITEMS.inc(filtered)  # after success: a failed call is answered again request by request
    return responses


def check_requests(pipeline: TwoStageRecommender, requests: list[RecommendRequest], batch: bool) -> None:
    """Each request's filters, checked as it arrives: a 400 for its own field, before it shares a pipeline call.

    :func:`answer` checks again in the pipeline's thread (the catalogue may have been refreshed since); if
    that fails, the batcher answers each request of the call alone, so the fault stays with its request.
    """
    for slot, request in enumerate(requests):
        if request.filters:
            filters = rules.as_filters(to_filters(request.filters))
            check_filters(pipeline, filters, "BatchRequest" if batch else "RecommendRequest", slot)


def check_filters(pipeline: TwoStageRecommender, filters: rules.Filters, title: str, slot: int = 0) -> None:
    """Filters the catalogue cannot apply are a validation error naming the field (a 400, like any bad field)."""
    try:
        pipeline.view.catalogue.check(filters)
    except rules.RuleError as exc:
        raise filter_error(exc.field, exc.reason, title, slot) from None


def invalid_filters(catalogue: rules.Catalogue, requests: list[RecommendRequest]) -> list[dict | None]:
    """Per request, what is wrong with its filters for this catalogue (``None``: nothing), as JSON.

    For a stage service, which cannot raise a 400 at its caller: the split form's entry turns
    it into the error :func:`check_filters` raises in one process (:func:`filter_error`).
    """
    out: list[dict | None] = []
    for request in requests:
        try:
            catalogue.check(rules.as_filters(to_filters(request.filters)))
        except rules.RuleError as exc:
            out.append({"field": exc.field, "message": exc.reason})
        else:
            out.append(None)
    return out


def filter_error(field: str, message: str, title: str, slot: int = 0) -> ValidationError:
    """The 400 for a filter the catalogue cannot apply: a validation error at ``field`` (slot ``slot`` of a batch)."""
    loc = tuple(field.split("."))
    if title == "BatchRequest":
        loc = ("requests", slot, *loc)
    error = InitErrorDetails(
        type=PydanticCustomError("unknown_filter", "{message}", {"message": message}), loc=loc, input=None
    )
    return ValidationError.from_exception_data(title, [error])


def to_filters(filters: dict[str, AttributeFilter]) -> dict[str, rules.AttributeFilter]:
    """API filters as the pipeline's rules."""
    return {
        attribute: rules.AttributeFilter(
            include=tuple(rule.include) if rule.include is not None else None,
            exclude=tuple(rule.exclude),
            gte=rule.gte,
            gt=rule.gt,
            lte=rule.lte,
            lt=rule.lt,
        )
        for attribute, rule in filters.items()
    }


def similar_to(pipeline: TwoStageRecommender, index: int, request: SimilarItemsRequest) -> list[RecommendedItem]:
    """``/similar_items``: the nearest items the request's filters and the hidden list allow."""
    filters = rules.as_filters(to_filters(request.filters))
    check_filters(pipeline, filters, "SimilarItemsRequest")
    return ranked(*pipeline.similar(index, request.k, filters))


def similar_response(
    request: SimilarItemsRequest, items: list[RecommendedItem], tags: ModelTags
) -> SimilarItemsResponse:
    """``/similar_items``' answer; a list shorter than ``k`` says why (the rules left no more), never silently."""
    message = None
    if len(items) < request.k:
        message = f"only {len(items)} similar items: the catalogue, the filters and the hidden items leave no more"
    return SimilarItemsResponse(item_id=request.item_id, recommendations=items, message=message, model=tags)


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
            to_filters(r.filters),
            r.offset,
            float(r.diversity),
            r.explain,
        )
        for r in requests
    ]


def to_responses(
    recommendations: list[Recommendation], tags: ModelTags, count_cold_starts: bool = True
) -> list[RecommendResponse]:
    """Pipeline answers in the API's envelope (cold starts counted, unless every answer is a baseline's)."""
    responses = []
    for recommendation in recommendations:
        if count_cold_starts and recommendation.strategy == POPULAR:
            COLD_STARTS.inc()
        responses.append(
            RecommendResponse(
                user_id=recommendation.user_id,
                recommendations=ranked(
                    recommendation.item_ids,
                    recommendation.scores,
                    recommendation.titles,
                    recommendation.explanations,
                    recommendation.first_rank,
                ),
                message=recommendation.message,
                strategy=recommendation.strategy,
                model=tags,
                request_id=new_request_id(),
            )
        )
    return responses


def uncounted_answers(runtime: Runtime, requests: list[RecommendRequest], popular: bool = False):
    """A pipeline's answers that no metric counts: a shadow's, an interleaving arm's second model's."""
    queries = to_queries(requests)
    found = runtime.pipeline.popular_baseline(queries) if popular else runtime.pipeline.recommend(queries)
    return to_responses(found, runtime.tags, count_cold_starts=False)
