"""The two-stage pipeline: ALS candidates, features joined, CatBoost re-ranks.

The service, the offline batch CLI, the evaluation and the parity test all
call :meth:`TwoStageRecommender.recommend`; there is no second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.candidates import CandidateModel
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
        """Items the filters remove for a query (seen plus excluded), for metrics."""
        user = self.candidates.user_index.get(query.user_id)
        seen = self.candidates.seen.indptr
        return len(query.exclude_items) + (
            int(seen[user + 1] - seen[user]) if user is not None and query.exclude_seen else 0
        )

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
        items, als_scores = self.candidate_lists(queries)
        return self.rank(queries, items, als_scores)

    def candidate_lists(self, queries: list[Query]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Stage one for known users: ALS candidates (item indices) and scores, per query."""
        users = np.array([self.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
        exclude_seen = [q.exclude_seen for q in queries]
        batches = {}
        for flag in set(exclude_seen):
            rows = [i for i, f in enumerate(exclude_seen) if f == flag]
            batch = self.candidates.top_n(
                users[rows], self.n_candidates, flag, [self._excluded(queries[i]) for i in rows]
            )
            for slot, row in enumerate(rows):
                batches[row] = (batch.items[slot], batch.scores[slot])
        return [batches[i][0] for i in range(len(queries))], [batches[i][1] for i in range(len(queries))]

    def rank(self, queries: list[Query], items: list[np.ndarray], als_scores: list[np.ndarray]) -> list[Recommendation]:
        """Stage two: re-rank each query's candidates and keep its top k (ALS order without a ranker)."""
        users = np.array([self.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
        final = self.score_pairs(users, items, als_scores) if self.ranker is not None else als_scores
        out = []
        for query, cand, score in zip(queries, items, final, strict=True):
            order = np.lexsort((np.arange(len(cand)), -score))[: query.k]
            out.append(self._answer(query, cand[order], score[order], TWO_STAGE))
        return out

    def pair_rows(
        self,
        users: np.ndarray,
        items: list[np.ndarray],
        als_scores: list[np.ndarray],
        names: FeatureNames | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows for each user's candidates, users in order, best ALS first.

        ``names`` defaults to the ranker's; training passes the view's own.
        """
        lengths = [len(c) for c in items]
        flat_items = np.concatenate(items) if items else np.empty(0, np.int64)
        flat_users = np.repeat(self._user_rows[users], lengths)
        ranks = np.concatenate([np.arange(1, n + 1, dtype=np.float32) for n in lengths])
        names = names or self.ranker.names
        return self.view.rows(names, flat_users, flat_items, np.concatenate(als_scores), ranks)

    def score_pairs(self, users: np.ndarray, items: list[np.ndarray], als_scores: list[np.ndarray]) -> list[np.ndarray]:
        """Ranker scores for each user's candidates (one CatBoost call)."""
        numeric, categorical = self.pair_rows(users, items, als_scores)
        scores = self.ranker.score(numeric, categorical)
        return np.split(scores, np.cumsum([len(c) for c in items])[:-1])

    def _cold_start(self, query: Query) -> Recommendation:
        excluded = set(self._excluded(query).tolist())
        segment = self.view.segment_scores(query.user_attributes) if query.user_attributes else None
        if segment is not None:
            scores, used = segment
            # Popularity breaks ties among items no segment member touched.
            popularity_rank = np.empty(self.candidates.n_items, dtype=np.int64)
            popularity_rank[self.candidates.popular] = np.arange(self.candidates.n_items)
            order = np.lexsort((popularity_rank, -scores))
            message = f"unknown user: most popular for {', '.join(used)}"
        else:
            order = self.candidates.popular
            scores = np.zeros(self.candidates.n_items, dtype=np.float32)
            scores[order] = 1.0 / (1.0 + np.arange(len(order), dtype=np.float32))
            message = "unknown user: most popular items"
        picked = np.array([i for i in order[: query.k + len(excluded)] if i not in excluded])[: query.k]
        return self._answer(query, picked, scores[picked] if len(picked) else picked, POPULAR, message)

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
