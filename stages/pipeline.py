"""The two-stage pipeline: candidates from several sources, features joined, CatBoost re-ranks.

The service, the offline batch CLI, the evaluation and the parity test all
call :meth:`TwoStageRecommender.recommend`; there is no second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.families import Pairs
from stages.candidates import CandidateBatch, CandidateModel, ranking
from stages.feature_view import FeatureNames, FeatureView
from stages.ranker import Ranker

TWO_STAGE = "two_stage"
POPULAR = "popular"


@dataclass
class Query:
    """One recommendation request, ids already as strings."""

    user_id: str
    k: int = 10
    exclude_seen: bool = True
    exclude_items: list[str] = field(default_factory=list)
    user_attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class Recommendation:
    """Ranked items for one query and how they were chosen."""

    user_id: str
    item_ids: list[str]
    scores: list[float]
    titles: list[str | None]
    strategy: str
    message: str | None = None


class TwoStageRecommender:
    """Wires a candidate model, a feature view and a ranker.

    The feature view can be swapped (:meth:`with_view`) while the models stay.
    """

    def __init__(
        self,
        candidates: CandidateModel,
        ranker: Ranker | None,
        view: FeatureView,
        n_candidates: int = 100,
    ) -> None:
        self.candidates = candidates
        self.ranker = ranker
        self.view = view
        self.n_candidates = n_candidates
        # Snapshot row of each candidate-model user, fixed per view.
        self._user_rows = view.user_rows(list(candidates.user_ids))

    def with_view(self, view: FeatureView) -> TwoStageRecommender:
        """The same models over another feature snapshot."""
        return TwoStageRecommender(self.candidates, self.ranker, view, self.n_candidates)

    def recommend(self, queries: list[Query]) -> list[Recommendation]:
        """Answer queries in order; known users are scored together."""
        known = [q for q in queries if q.user_id in self.candidates.user_index]
        answers = dict(zip(map(id, known), self._two_stage(known), strict=True)) if known else {}
        return [answers[id(q)] if id(q) in answers else self._cold_start(q) for q in queries]

    def filtered_count(self, query: Query) -> int:
        """Catalogue items the filters remove for a query (seen, then excluded, each once), for metrics."""
        user = self.candidates.user_index.get(query.user_id)
        removed = set(self._excluded(query).tolist())
        if user is not None and query.exclude_seen:
            seen = self.candidates.seen
            removed.update(seen.indices[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        return len(removed)

    def similar(self, item: int, k: int) -> tuple[list[str], list[float], list[str | None]]:
        """Ids, cosine scores and titles of the ``k`` items closest to ``item``."""
        items, scores = self.candidates.similar_items(item, k)
        return (
            [str(i) for i in self.candidates.item_ids[items]],
            [round(float(s), 6) for s in scores],
            list(self.view.titles[items]),
        )

    def _excluded(self, query: Query) -> np.ndarray:
        index = self.candidates.item_index
        return np.array([index[i] for i in query.exclude_items if i in index], dtype=np.int64)

    def _two_stage(self, queries: list[Query]) -> list[Recommendation]:
        return self.rank(queries, self.candidate_lists(queries))

    def candidate_lists(self, queries: list[Query]) -> CandidateBatch:
        """Stage one for known users: every source's candidates, merged, in query order."""
        users = np.array([self.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
        exclude_seen = [q.exclude_seen for q in queries]
        slots: dict[int, tuple[CandidateBatch, int]] = {}
        for flag in set(exclude_seen):
            rows = [i for i, f in enumerate(exclude_seen) if f == flag]
            batch = self.candidates.top_n(
                users[rows], self.n_candidates, flag, [self._excluded(queries[i]) for i in rows]
            )
            slots.update({row: (batch, slot) for slot, row in enumerate(rows)})
        return CandidateBatch.gather([slots[i] for i in range(len(queries))])

    def rank(self, queries: list[Query], batch: CandidateBatch) -> list[Recommendation]:
        """Stage two: re-rank each query's candidates and keep its top k (ALS order without a ranker)."""
        users = np.array([self.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
        final = self.score_pairs(users, batch) if self.ranker is not None else batch.scores
        out = []
        for query, cand, score in zip(queries, batch.items, final, strict=True):
            order = np.lexsort((np.arange(len(cand)), -score))[: query.k]
            short = (
                f"only {len(order)} items left to recommend: the rest are seen or excluded"
                if len(order) < query.k
                else None
            )
            out.append(self._answer(query, cand[order], score[order], TWO_STAGE, short))
        return out

    def pair_rows(
        self, users: np.ndarray, batch: CandidateBatch, names: FeatureNames | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows for each user's candidates, users in order, candidates in merged order.

        ``names`` defaults to the ranker's; training passes its own.
        """
        lengths = [len(c) for c in batch.items]
        pairs = Pairs(
            user_rows=np.repeat(self._user_rows[users], lengths),
            items=_flat(batch.items, np.int64),
            als_scores=_flat(batch.scores, np.float32),
            cooc_scores=_flat(batch.cooc_scores, np.float32),
            source_ranks={source: _flat(ranks, np.float32) for source, ranks in batch.source_ranks.items()},
        )
        return self.view.rows(names or self.ranker.names, pairs)

    def score_pairs(self, users: np.ndarray, batch: CandidateBatch) -> list[np.ndarray]:
        """Ranker scores for each user's candidates (one CatBoost call)."""
        numeric, categorical = self.pair_rows(users, batch)
        scores = self.ranker.score(numeric, categorical)
        return np.split(scores, np.cumsum([len(c) for c in batch.items])[:-1])

    def _cold_start(self, query: Query) -> Recommendation:
        """Recent popularity for a user without interactions, reordered by their segments when known.

        Attributes come from the request, else from the users file (a user
        known there but without interactions is not a stranger).
        """
        stored = self.view.stored_attributes(query.user_id)
        attributes = {**stored, **{a: v for a, v in query.user_attributes.items() if v is not None}}
        params = self.candidates.params
        scores, used = cold_start_scores(self.view, self.candidates.cold_share, params.segment_weight, attributes)
        window = "all time" if params.cold_start_days is None else f"the last {params.cold_start_days} days"
        who = "no interactions yet" if query.user_id in self.view.user_row else "unknown user"
        among = f", reordered by what users with {', '.join(used)} take" if used else ""
        if attributes and params.segment_weight == 0:
            among = " (attributes not used: segments got no weight in the backtest)"
        picked = first_k_not_in(ranking(scores), query.k, set(self._excluded(query).tolist()))
        return self._answer(query, picked, scores[picked], POPULAR, f"{who}: most popular in {window}{among}")

    def _answer(
        self, query: Query, items: np.ndarray, scores: np.ndarray, strategy: str, message: str | None = None
    ) -> Recommendation:
        items = items.astype(np.int64)
        return Recommendation(
            user_id=query.user_id,
            item_ids=[str(i) for i in self.candidates.item_ids[items]],
            scores=[round(float(s), 6) for s in scores],
            titles=list(self.view.titles[items]),
            strategy=strategy,
            message=message,
        )


def cold_start_scores(
    view: FeatureView, share: np.ndarray, segment_weight: float, attributes: dict[str, object]
) -> tuple[np.ndarray, list[str]]:
    """Popularity shares plus ``segment_weight`` times the mean share within the user's segments."""
    segment = view.segment_scores(attributes) if attributes and segment_weight > 0 else None
    if segment is None:
        return share, []
    scores, used = segment
    return share + segment_weight * scores / len(used), used


def first_k_not_in(order: np.ndarray, k: int, excluded: set[int]) -> np.ndarray:
    """The first ``k`` entries of a ranking that are not excluded (popularity lists, cold start)."""
    return np.array([i for i in order[: k + len(excluded)] if i not in excluded][:k], dtype=np.int64)


def _flat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.empty(0, dtype)
