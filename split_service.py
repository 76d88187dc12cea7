"""The split topology: the two stages as their own BentoML services, composed by an entry service.

The same pipeline code as ``service.py`` (``stages.pipeline``), cut at the
stage boundary::

    client ──► Entry (/recommend, /recommend_batch, /similar_items, /feedback, /model_info; no model)
                 ├─► CandidateService  (candidates model + feature snapshot): CandidateBatch as JSON
                 └─► RankerService     (ranker + the features it needs): rows, CatBoost, rules, cold start

    bentoml serve split_service:Entry        # all three services, one command

On Kubernetes each stage is its own Deployment (``deploy/kubernetes/split.yaml``)
and the entry finds them through ``RECSYS_SPLIT_CANDIDATES_URL`` / ``RECSYS_SPLIT_RANKER_URL``
(``http://recsys-candidates:3000``...): see docs/serving.md, "Split topology".

Answers are the single-process service's, request for request: the candidates
service runs :meth:`TwoStageRecommender.candidate_lists` over the queries with a
history (stored or ``recent_items``), the ranker service :meth:`rank` over the
same queries with that batch, and the popular-items answer for the others, as
:meth:`TwoStageRecommender.recommend` does in one process. Both stages get the
whole query (``recent_items`` included), so fresh users are ranked on both sides.

The calls between the services are idempotent and retried on a dropped
connection: see :mod:`serving.split_client` for why connections dropped
(BentoML #4971, PR #5698) and what is done about it.

Each stage computes in one thread of its own and answers every call that
queued meanwhile in one pipeline call (:class:`serving.batcher.MicroBatcher`,
as ``service.py``): its event loop only reads, queues and writes. When the
stages computed on their event loops (``async`` APIs), a burst left requests
unread in the ranker's socket for up to 10 s and the entry answered 504
(BENCHMARKS.md, issue 16). A stage whose queue is full, or where a call waited
past ``RECSYS_QUEUE_TIMEOUT_SECONDS``, answers 503, and the entry answers 503
with ``Retry-After`` instead of a late 504.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import bentoml
from bentoml.exceptions import ServiceUnavailable

from serving import logs, startup
from serving.api_models import (
    BatchRequest,
    BatchResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    ModelTags,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.batcher import MicroBatcher, Overloaded
from serving.bentoml_app import serve_with_worker_app
from serving.connection import ConnectionLimits
from serving.edge import EdgeLimits, serve_behind_edge
from serving.experiments import ARM_HEADER, arm_error
from serving.responses import filter_error, ranked, similar_response, to_responses
from serving.runtime import IncompatibleModels, paired_candidates_tag, ranker_card, stored_model
from serving.settings import get_settings
from serving.shared import (
    batch_or_shed,
    recommend_or_shed,
    record_feedback,
    record_impressions,
    recorder_from,
    settle_and_refresh,
    shed,
    start_runtime,
    unknown_item,
    worker_threads,
)
from serving.split import (
    CandidateStage,
    RankerStage,
    join_found,
    out_of_step,
    queued,
    recommendation_of,
    requests_json,
    split_found,
)
from serving.split_client import SplitSettings, call, harden, stage

settings = get_settings()
logs.install()  # as service.py: client errors and 503s as one line, floods rate-limited (serving/logs.py)
split = SplitSettings()
CANDIDATES_TAG = paired_candidates_tag(settings.ranker_tag, settings.candidates_tag)
if not startup.in_worker() and not (split.candidates_url or split.ranker_url):
    # Served together (one command): refuse a mismatched pair before any worker starts, as service.py does.
    # Served apart, each stage loads its own side and the ranker checks the candidates tag of every batch.
    startup.check_in_child()  # in a child: what it loads does not stay in this process
if not startup.in_worker():
    startup.own_metrics_dir()  # the entry and each stage apart: three servers, often one BENTOML_HOME

QUIET = {"logging": {"access": {"enabled": False}}, "traffic": {"timeout": settings.timeout_seconds}}
# No OpenTelemetry span per request unless RECSYS_TRACE_REQUESTS asks for them (see BENCHMARKS.md: ~10% of a
# request), as service.py: every route of the entry and of both stages; probes and metrics stay.
ROUTES = ["/recommend", "/recommend_batch", "/similar_items", "/feedback", "/model_info"]
STAGE_ROUTES = ["/candidates", "/rank", "/plan", "/similar"]
TRACING = {"excluded_urls": [] if settings.trace_requests else ROUTES + STAGE_ROUTES}
# The sessions bentoml.depends opens to a stage: see serving/split_client.py (BentoML #4971, PR #5698).
CONNECTION = (
    {"runner_connection": {"max_requests": split.max_requests, "max_age": split.max_age}} if split.hardened else {}
)


def refuse_forced_arm(ctx: bentoml.Context, batch: bool) -> None:
    """A 400 for a request that forces an experiment arm: the split topology serves no experiment."""
    if ctx.request.headers.getlist(ARM_HEADER):  # every one of them, even empty, as service:Recommender reads them
        raise arm_error("the split topology serves no experiment", batch)


def stage_batcher(run: Callable[[list], list]) -> MicroBatcher:
    """A stage's pipeline thread: the calls that queue while one runs are answered by the next, together."""
    return MicroBatcher(run, settings.max_batch_queries, settings.max_pending_queries, settings.queue_timeout_seconds)


@bentoml.service(name="recsys-candidates", workers=split.candidates_workers, tracing=TRACING, **CONNECTION, **QUIET)
class CandidateService:
    """Stage one: every source's candidates for the requests with a history. Loads the candidates model only."""

    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        worker_threads(settings)
        # The ranker's features, so that this stage refuses the snapshots the ranker stage refuses (the ranker
        # model is in this Bento too: its card named the candidates model above).
        names = ranker_card(stored_model(settings.ranker_tag, "ranker")).features
        self.stage = CandidateStage.from_model(self.candidates_model, settings.feature_store, names)
        self.stage.warm(settings.n_candidates or 100)
        settle_and_refresh(self.stage, settings)
        self.batcher = stage_batcher(self.stage.candidate_rows)

    @bentoml.on_shutdown
    def stop(self) -> None:
        self.stage.stop_refresh()
        self.batcher.close()

    @bentoml.api
    async def candidates(self, requests: list[dict], n: int) -> dict:
        """``rankable`` per request and the CandidateBatch (``serving.split.batch_to_json``) of the rankable ones."""
        if not requests:
            return self.stage.candidates_for([], n)
        invalid = self.stage.invalid_filters(requests)
        if invalid is not None:  # refused before it is queued with others: the entry answers 400
            return {"invalid": invalid}
        rows = await queued(self.batcher, [(request, n) for request in requests])
        # A call is never split between two pipeline calls: one model tag and snapshot version for all its rows.
        _, model, features = rows[0]
        return join_found([row for row, _, _ in rows], model, features)

    @bentoml.api
    async def similar(self, item_id: str, k: int, filters: dict | None = None) -> dict | None:
        """Closest items by ALS factors that the filters allow; ``None`` for an item outside the catalogue."""
        return await self.batcher.call(self.stage.similar, item_id, k, filters)


@bentoml.service(name="recsys-ranker", workers=split.ranker_workers, tracing=TRACING, **CONNECTION, **QUIET)
class RankerService:
    """Stage two: feature rows, CatBoost, the rules, and popular items for users without a history."""

    ranker_model = bentoml.models.BentoModel(settings.ranker_tag)
    # Read, not run: the features need the candidate model's ids and ALS item factors (pair features).
    candidates_model = bentoml.models.BentoModel(CANDIDATES_TAG)

    def __init__(self) -> None:
        self.runtime = start_runtime(settings, str(self.ranker_model.tag), str(self.candidates_model.tag))
        self.stage = RankerStage(self.runtime)
        self.stage.warm()
        self.batcher = stage_batcher(self.stage.rank_rows)

    @bentoml.on_shutdown
    def stop(self) -> None:
        self.runtime.stop_refresh()
        self.batcher.close()

    @bentoml.api
    async def plan(self) -> dict:
        """How many candidates to ask stage one for, and the model tags answers carry."""
        return self.stage.plan()

    @bentoml.api
    async def rank(self, requests: list[dict], candidates: dict) -> dict:
        """Ranked answers in request order, from the candidates service's output, with the plan that made them.

        The tags and candidate count travel with every answer: after a redeploy on another model the entry
        reports the model that answered, not the one it first asked about.
        """
        try:
            self.stage.check_model(candidates)
        except IncompatibleModels as error:
            raise out_of_step(error) from None
        answers = await queued(self.batcher, list(zip(requests, split_found(candidates), strict=True)))
        return {"answers": answers, **self.stage.plan()}

    @bentoml.api(route="/model_info")
    def model_info(self) -> ModelInfo:
        return self.runtime.info()


@bentoml.service(name="recsys-split", workers=settings.workers, tracing=TRACING, **QUIET)
class Entry:
    """The public API of the split form: validates, calls stage one, then stage two. Loads no model."""

    candidate_stage = stage(CandidateService, split.candidates_url)
    ranker_stage = stage(RankerService, split.ranker_url)

    def __init__(self) -> None:
        if split.hardened:
            harden(self.candidate_stage, split.max_requests, split.max_age)
            harden(self.ranker_stage, split.max_requests, split.max_age)
        self._plan: tuple[int, ModelTags] | None = None
        self._call = call if split.hardened else functools.partial(call, retries=0)
        # Impressions and /feedback as service.py records them: the entry sees every answer.
        self.recorder = recorder_from(settings)

    @bentoml.on_shutdown
    def stop(self) -> None:
        self.recorder.close()

    async def _n_and_tags(self) -> tuple[int, ModelTags]:
        """The candidate count and tags of the last answer (asked of the ranker before the first one)."""
        if self._plan is None:
            self._learn(await self._call(self.ranker_stage.to_async.plan))
        return self._plan

    def _learn(self, plan: dict) -> tuple[int, ModelTags]:
        self._plan = plan["n_candidates"], ModelTags.model_validate(plan["tags"])
        return self._plan

    async def _answer(
        self, requests: list[RecommendRequest], title: str = "RecommendRequest"
    ) -> list[RecommendResponse]:
        n, tags = await self._n_and_tags()
        body = requests_json(requests)
        found = await self._call(self.candidate_stage.to_async.candidates, requests=body, n=n)
        if "invalid" in found:  # filters the catalogue cannot apply: the 400 the single process gives
            slot, wrong = next((i, w) for i, w in enumerate(found["invalid"]) if w)
            raise filter_error(wrong["field"], wrong["message"], title, slot)
        rank_reply = await self._call(self.ranker_stage.to_async.rank, requests=body, candidates=found)
        _, tags = self._learn(rank_reply)  # the tags of the model that answered: stages may have been redeployed
        answers = [recommendation_of(a, r) for a, r in zip(rank_reply["answers"], requests, strict=True)]
        responses = to_responses(answers, tags)
        record_impressions(self.recorder, responses)
        return responses

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /, ctx: bentoml.Context) -> RecommendResponse:
        """Top-k items for one user, as ``service:Recommender`` answers it."""
        refuse_forced_arm(ctx, batch=False)
        return await recommend_or_shed(ctx, request, self._answer)

    @bentoml.api
    async def recommend_batch(self, batch: BatchRequest, /, ctx: bentoml.Context) -> BatchResponse:
        """Several recommendation requests, answered in order and scored together."""
        refuse_forced_arm(ctx, batch=True)
        return await batch_or_shed(ctx, batch, functools.partial(self._answer, title="BatchRequest"))

    @bentoml.api
    async def similar_items(self, request: SimilarItemsRequest, /, ctx: bentoml.Context) -> SimilarItemsResponse:
        """Items whose ALS factors are closest (from the candidates service)."""
        filters = request.model_dump(mode="json")["filters"]
        try:
            _, tags = await self._n_and_tags()
            found = await self._call(
                self.candidate_stage.to_async.similar, item_id=request.item_id, k=request.k, filters=filters
            )
        except Overloaded as error:
            shed(ctx, error)
            return SimilarItemsResponse(item_id=request.item_id, recommendations=[], status="error", message=str(error))
        if found is None:
            return unknown_item(ctx, request, tags)
        if "invalid" in found:
            raise filter_error(found["invalid"]["field"], found["invalid"]["message"], "SimilarItemsRequest")
        return similar_response(request, ranked(found["item_ids"], found["scores"], found["titles"]), tags)

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /, ctx: bentoml.Context) -> FeedbackResponse:
        """What users did with items, appended to the event log (as ``service:Recommender`` does)."""
        return record_feedback(self.recorder, request, ctx)

    @bentoml.api(route="/model_info")
    async def model_info(self) -> ModelInfo:
        """The ranker service's model information (it holds both tags); 503 while it cannot be reached."""
        try:
            return ModelInfo.model_validate(await self._call(self.ranker_stage.to_async.model_info))
        except Overloaded as error:
            raise ServiceUnavailable(str(error)) from None


# The public edge, as in service.py: routes, headers, key, content type, body, one error envelope.
serve_behind_edge(Entry, EdgeLimits.from_settings(settings, set()), ConnectionLimits.from_settings(settings))
# The stages behind it: BentoML's app with its per-request lookups made once per worker, as the entry's.
serve_with_worker_app(CandidateService)
serve_with_worker_app(RankerService)
