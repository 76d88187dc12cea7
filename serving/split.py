"""The two stages of the pipeline behind their own services (``split_service.py``): what each computes.

Plain classes, no BentoML service here: the services are thin, and these are
tested in-process against :meth:`TwoStageRecommender.recommend`.

The candidates stage answers ``rankable`` for every request (a stored or a
recent history) and the merged candidates of the rankable ones, in order, as
:func:`batch_to_json`; the ranker stage scores those with the same
requests and gives popular items to the others. That is the cut
:meth:`TwoStageRecommender.recommend` makes in one process, so the answers are
the same.

Both stages compute off the event loop, in one thread each, and answer the
calls that queued meanwhile in one pipeline call (:class:`serving.batcher.MicroBatcher`,
as ``service.py`` does): a stage that computed on its event loop left
requests unread in its sockets for seconds under a burst (BENCHMARKS.md,
issue 16). A call's share of a batch is one row per request
(:func:`split_found`, :func:`join_found`); the wire format between the
services is unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from features.families.candidate_pair import SOURCES
from features.store import MODEL_SNAPSHOT_DIR
from serving.api_models import ModelTags, RecommendRequest, SimilarItemsRequest
from serving.batcher import MicroBatcher, Overloaded
from serving.metrics import FILTERED_ITEMS
from serving.responses import invalid_filters, to_filters, to_queries
from serving.runtime import HiddenItems, IncompatibleModels, Runtime, SnapshotFollower, poll_in_thread
from stages import rules
from stages.candidates import CandidateBatch, CandidateModel
from stages.card import CandidatesCard, CardError
from stages.feature_view import FeatureNames, FeatureView
from stages.pipeline import Explanation, Query, RecentEvent, Recommendation, TwoStageRecommender

logger = logging.getLogger("recsys")


def requests_json(requests: list[RecommendRequest]) -> list[dict]:
    """Validated requests as JSON for the stage services (they validate them again: same model)."""
    return [r.model_dump(mode="json") for r in requests]


def queries_of(requests: list[dict]) -> list[Query]:
    return to_queries([RecommendRequest.model_validate(r) for r in requests])


def recommendation_of(data: dict, request: RecommendRequest) -> Recommendation:
    """A ranker stage's answer to ``request`` as the entry's pipeline would have made it.

    Its explanations are rebuilt from JSON (they arrived as dicts: ``explain`` was a 500 here); where the page
    starts comes from the request the entry holds, and fields the entry does not know are dropped, so a stage
    of another version during a rolling update answers instead of failing every request.
    """
    known = {f.name for f in fields(Recommendation)} - {"explanations", "first_rank"}
    explanations = data.get("explanations")
    return Recommendation(
        **{key: value for key, value in data.items() if key in known},
        explanations=None
        if explanations is None
        else [Explanation([tuple(b) for b in e["because"]], list(e["reasons"])) for e in explanations],
        first_rank=request.offset + 1,
    )


Row = dict[str, list]  # one request's candidates: a row of each batch_to_json() list


def batch_to_json(batch: CandidateBatch) -> dict[str, list[list[float | None]]]:
    """A candidate batch as plain lists (NaN ranks as ``None``), for sending it between the stages."""

    def plain(arrays: list[np.ndarray]) -> list[list[float | None]]:
        return [[None if v != v else float(v) for v in a.tolist()] for a in arrays]

    return {
        "items": [a.tolist() for a in batch.items],
        "scores": plain(batch.scores),
        "cooc_scores": plain(batch.cooc_scores),
        **{f"rank_{source}": plain(ranks) for source, ranks in batch.source_ranks.items()},
    }


def batch_from_json(data: dict[str, list[list[float | None]]]) -> CandidateBatch:
    """The inverse of :func:`batch_to_json`."""

    def arrays(rows: list[list[float | None]], dtype: type) -> list[np.ndarray]:
        return [np.array([np.nan if v is None else v for v in row], dtype=dtype) for row in rows]

    return CandidateBatch(
        items=arrays(data["items"], np.int64),
        scores=arrays(data["scores"], np.float32),
        source_ranks={source: arrays(data[f"rank_{source}"], np.float32) for source in SOURCES},
        cooc_scores=arrays(data["cooc_scores"], np.float32),
    )


def split_found(found: dict) -> list[Row | None]:
    """The candidates stage's answer per request: its candidate row, or ``None`` for a request with no history."""
    rows: list[Row | None] = []
    slot = 0
    for rankable in found["rankable"]:
        rows.append({key: column[slot] for key, column in found["batch"].items()} if rankable else None)
        slot += rankable
    return rows


def join_found(rows: list[Row | None], model: str, features: str) -> dict:
    """The inverse of :func:`split_found`: one answer (as :meth:`CandidateStage.candidates_for`) over many rows."""
    keys = batch_to_json(CandidateBatch.empty())
    batch = {key: [row[key] for row in rows if row is not None] for key in keys}
    return {"model": model, "features": features, "rankable": [row is not None for row in rows], "batch": batch}


async def queued(batcher: MicroBatcher, parts: list) -> list:
    """``batcher.submit`` in a stage service: a full queue or a wait past the queue timeout answers 503.

    The entry turns that 503 into its own, with ``Retry-After`` (:func:`serving.split_client.call`), so a
    burst is refused early instead of queueing past the entry's traffic timeout (504).
    """
    if not parts:
        return []
    try:
        return await batcher.submit(parts)
    except Overloaded as error:
        raise ServiceUnavailable(str(error)) from None
    except IncompatibleModels as error:
        raise out_of_step(error) from None


def out_of_step(error: IncompatibleModels) -> ServiceUnavailable:
    """A 503 for stages serving models or snapshots that do not go together.

    At start-up that refuses to start (the guard); while serving it means a rolling update or a
    feature refresh has reached one stage and not yet the other: the entry answers 503 with
    ``Retry-After``, not 500, and a retry soon after finds them in step again.
    """
    return ServiceUnavailable(f"models out of step: {error}")


class CandidateStage:
    """Stage one: the candidates model and a feature snapshot (users' rows, the data's end for recent items)."""

    def __init__(
        self, candidates: CandidateModel, tag: str, feature_source: str, names: FeatureNames | None = None
    ) -> None:
        self.candidates = candidates
        self.tag = tag
        # Checked as the ranker stage's Runtime checks it (the ranker's features ``names``, coverage of the model's
        # items and users) and followed the same way: a snapshot one stage refuses, the other refuses too.
        self.snapshots = SnapshotFollower(
            feature_source, candidates, names, "candidates stage: feature refresh", prepare=False
        )
        # The operators' hidden items: blocked here, where candidates are made (the ranker only orders them).
        self.hidden_items = HiddenItems(feature_source)
        self.hidden = self.hidden_items.items
        self._pipelines: dict[int, TwoStageRecommender] = {}
        self._stop = threading.Event()

    @classmethod
    def from_model(
        cls, model: bentoml.Model, feature_store: str | None = None, names: FeatureNames | None = None
    ) -> CandidateStage:
        """The stage for a candidates model; ``names``: the ranker's features, which every snapshot must have."""
        try:
            card = CandidatesCard.from_metadata(model.info.metadata, str(model.tag))
        except CardError as exc:
            raise IncompatibleModels(str(exc)) from exc
        candidates = CandidateModel.load(Path(model.path), card.params)
        return cls(candidates, str(model.tag), feature_store or str(Path(model.path) / MODEL_SNAPSHOT_DIR), names)

    @property
    def view(self) -> FeatureView:
        return self.snapshots.view

    def pipeline(self, n_candidates: int) -> TwoStageRecommender:
        """The pipeline without a ranker, over the current snapshot, cut at ``n_candidates``."""
        pipeline = self._pipelines.get(n_candidates)
        if pipeline is None or pipeline.view is not self.view or pipeline.hidden is not self.hidden:
            pipeline = self._pipelines[n_candidates] = TwoStageRecommender(
                self.candidates, None, self.view, n_candidates, self.hidden
            )
        return pipeline

    def invalid_filters(self, requests: list[dict]) -> list[dict | None] | None:
        """What is wrong with each request's filters for this snapshot's catalogue; ``None`` if nothing is."""
        if not any(r.get("filters") for r in requests):
            return None
        invalid = invalid_filters(self.view.catalogue, [RecommendRequest.model_validate(r) for r in requests])
        return invalid if any(invalid) else None

    def candidates_for(self, requests: list[dict], n_candidates: int) -> dict:
        """``rankable`` per request, the candidates of the rankable ones, the model tag and the snapshot version."""
        pipeline = self.pipeline(n_candidates)
        queries = queries_of(requests)
        rankable = pipeline.rankable(queries)
        chosen = [q for q, r in zip(queries, rankable, strict=True) if r]
        batch = pipeline.candidate_lists(chosen) if chosen else CandidateBatch.empty()
        return {"model": self.tag, "features": self.view.version, "rankable": rankable, "batch": batch_to_json(batch)}

    def candidate_rows(self, asks: list[tuple[dict, int]]) -> list[tuple[Row | None, str, str]]:
        """:meth:`candidates_for` over the requests of many calls, ``(request, n_candidates)`` each, in one go.

        Per request: its row (``None``: no history), the model tag and the snapshot version it came from.
        """
        answers: list[tuple[Row | None, str, str]] = [(None, self.tag, self.view.version)] * len(asks)
        by_n: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(asks):
            by_n.setdefault(n, []).append(i)
        for n, slots in by_n.items():
            found = self.candidates_for([asks[i][0] for i in slots], n)
            for i, row in zip(slots, split_found(found), strict=True):
                answers[i] = (row, found["model"], found["features"])
        return answers

    def warm(self, n_candidates: int = 100) -> None:
        """One known user and one with recent items through the stage, before the first request pays for it."""
        user, item = str(self.candidates.user_ids[0]), str(self.candidates.item_ids[0])
        self.pipeline(n_candidates).candidate_lists([Query(user), Query("warm-up", recent_items=[RecentEvent(item)])])

    def similar(self, item_id: str, k: int, filters: dict | None = None) -> dict | None:
        """Closest items by ALS factors that the filters and hidden items allow; ``None`` for an unknown item.

        Filters this catalogue cannot apply come back as ``{"invalid": {"field", "message"}}``.
        """
        index = self.candidates.item_index.get(item_id)
        if index is None:
            return None
        request = SimilarItemsRequest.model_validate({"item_id": item_id, "k": k, "filters": filters or {}})
        item_rules = rules.as_filters(to_filters(request.filters))
        try:
            self.view.catalogue.check(item_rules)
        except rules.RuleError as exc:
            return {"invalid": {"field": exc.field, "message": exc.reason}}
        item_ids, scores, titles = self.pipeline(1).similar(index, k, item_rules)
        return {"item_ids": item_ids, "scores": scores, "titles": titles}

    def refresh_once(self) -> bool:
        """Follow the feature store as the ranker does (the snapshot's end dates recent items; hidden items)."""
        hidden = self.hidden_items.reread()
        changed = hidden != self.hidden
        if changed:
            self.hidden = hidden
            logger.info("candidates stage: hidden items now %d", len(hidden))
        view = self.snapshots.poll()  # a bad snapshot is kept out and recorded, as the ranker stage's is
        if view is None:
            return changed
        logger.info("candidates stage: feature snapshot %s now serving", view.version)
        return True

    def start_refresh(self, every_seconds: float, after_swap: Callable[[], None] | None = None) -> None:
        """Follow the feature store in a daemon thread, as :meth:`Runtime.start_refresh` does."""
        poll_in_thread(
            every_seconds, self._stop, self.refresh_once, after_swap, lambda: self.view.version,
            who="candidates stage: feature refresh",
        )  # fmt: skip

    def stop_refresh(self) -> None:
        self._stop.set()


class RankerStage:
    """Stage two over a :class:`Runtime`: rows, CatBoost and the rules; popular items for users with no history."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def warm(self) -> None:
        """The ranker's first scoring is slow (CatBoost, row plans): done at start-up, not in the first requests."""
        candidates = self.runtime.candidates
        user, item = str(candidates.user_ids[0]), str(candidates.item_ids[0])
        self.runtime.pipeline.recommend([Query(user), Query("warm-up", recent_items=[RecentEvent(item)])])

    def plan(self) -> dict:
        """What the entry asks the candidates stage for, and the tags it reports."""
        return {"n_candidates": self.runtime.pipeline.n_candidates, "tags": self.runtime.tags.model_dump()}

    def check_model(self, found: dict) -> None:
        """Candidates from another candidates model than this ranker's partner are refused, not ranked."""
        if found["model"] != self.runtime.tags.candidates:
            raise IncompatibleModels(
                f"ranker {self.runtime.tags.ranker} was trained against candidates model "
                f"{self.runtime.tags.candidates}, but the candidates service serves {found['model']}"
            )

    def rank(self, requests: list[dict], found: dict) -> list[dict]:
        """Answers in request order, as :meth:`TwoStageRecommender.recommend` gives them in one process."""
        self.check_model(found)
        pipeline = self.runtime.pipeline
        queries = queries_of(requests)
        filtered = sum(pipeline.filtered_count(q) for q in queries)
        rankable = pipeline.rankable(queries)
        if rankable != found["rankable"]:
            raise IncompatibleModels("the candidates service and the ranker disagree on which users have a history")
        chosen = [q for q, r in zip(queries, rankable, strict=True) if r]
        ranked = iter(pipeline.rank(chosen, batch_from_json(found["batch"])) if chosen else [])
        cold = iter(pipeline.recommend([q for q, r in zip(queries, rankable, strict=True) if not r]))
        answers = [asdict(next(ranked) if r else next(cold)) for r in rankable]
        FILTERED_ITEMS.inc(filtered)  # after success: a failed call is answered again request by request
        return answers

    def rank_rows(self, parts: list[tuple[dict, Row | None]]) -> list[dict]:
        """:meth:`rank` over the requests of many calls, ``(request, its candidate row)`` each, in one go.

        One CatBoost call for all of them: its per-call cost is what batching saves (BENCHMARKS.md).
        Each call's model tag was checked when it queued (:meth:`check_model`).
        """
        found = join_found([row for _, row in parts], self.runtime.tags.candidates, "")
        return self.rank([request for request, _ in parts], found)

    @property
    def tags(self) -> ModelTags:
        return self.runtime.tags
