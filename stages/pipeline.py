"""The two-stage pipeline: candidates from several sources, features joined, CatBoost re-ranks.

The service, the split topology's stages, the offline batch CLI and the
evaluation all call :meth:`TwoStageRecommender.recommend` (or its steps);
there is no second copy. A request
goes down these steps, each a method below, in this order:

1. resolve users (:meth:`~TwoStageRecommender._user`): stored index, snapshot row, recent items;
2. candidates (:meth:`~TwoStageRecommender._candidate_lists`): every source, merged, rules applied;
3. rows (:meth:`~TwoStageRecommender.pair_rows`): the feature view's columns per (user, candidate);
4. scores (:meth:`~TwoStageRecommender._score_rows`): the query's ranker (:meth:`~TwoStageRecommender._ranker_of`)
   and its prior;
5. page (:meth:`~TwoStageRecommender._page`): ranked, diversified, cut to offset and k;
6. answer (:meth:`~TwoStageRecommender._answer`): ids, titles, the message (``stages/messages.py``),
   explanations on request.

Users the two stages cannot rank are answered by ``stages/cold_start.py``.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from features.families import FreshUsers, Pairs
from features.schema import DAY
from stages import messages
from stages.candidates import CandidateBatch, CandidateModel, Recent, ranking
from stages.cold_start import cold_start_scores, popular_page
from stages.explain import Reasons, because
from stages.feature_view import FeatureNames, FeatureView
from stages.ranker import Ranker
from stages.rules import AttributeFilter, Filters, as_filters, mmr, unit_rows
from stages.symmetric_trees import FAST_ROWS, CategoryHashes

logger = logging.getLogger(__name__)

TWO_STAGE = "two_stage"
POPULAR = "popular"


@dataclass(frozen=True)
class RecentEvent:
    """An interaction the client reports and the model may not hold: since training, or in this session."""

    item_id: str
    timestamp: int | None = None  # unix seconds; None: now
    weight: float = 1.0


@dataclass
class Query:
    """One recommendation request, ids already as strings."""

    user_id: str
    k: int = 10
    exclude_seen: bool = True
    exclude_items: list[str] = field(default_factory=list)
    user_attributes: dict[str, object] = field(default_factory=dict)
    recent_items: list[RecentEvent] = field(default_factory=list)
    filters: dict[str, AttributeFilter] = field(default_factory=dict)  # attribute -> rule, all must hold
    offset: int = 0  # items to skip: the page starts after them
    diversity: float = 0.0  # 0..1, maximal-marginal-relevance re-rank; 0 leaves the ranking as it is
    explain: bool = False  # attach `because` and `reasons` to each item

    @property
    def rules(self) -> Filters:
        return as_filters(self.filters)

    @property
    def depth(self) -> int:
        """How far down the ranking this query reads: its page's last position."""
        return self.offset + self.k


@dataclass(frozen=True)
class Explanation:
    """Why an item was recommended: the user's own items it resembles (id, title) and the ranker's reasons."""

    because: list[tuple[str, str | None]]
    reasons: list[str]


_item_id = operator.attrgetter("item_id")


@dataclass(frozen=True)
class _User:
    """Who a query is about: candidate-model index and snapshot row (-1: none), and their usable recent items."""

    index: int
    row: int
    recent: Recent | None
    days_ago: np.ndarray | None
    ignored: int  # recent items not in the catalogue

    @property
    def rankable(self) -> bool:
        return self.index >= 0 or self.recent is not None

    @property
    def recent_use(self) -> messages.RecentUse:
        return messages.RecentUse(0 if self.recent is None else len(self.recent.items), self.ignored, self.index < 0)


@dataclass(frozen=True)
class FreshBatch:
    """The queries of a batch that bring recent items: each query's slot (-1: none) among the fresh users."""

    slots: np.ndarray
    users: FreshUsers


@dataclass
class Recommendation:
    """Ranked items for one query and how they were chosen."""

    user_id: str
    item_ids: list[str]
    scores: list[float]
    titles: list[str | None]
    strategy: str
    message: str | None = None
    explanations: list[Explanation] | None = None  # one per item when the query asked to explain
    first_rank: int = 1  # the first item's place in the whole ranking: offset + 1 on a later page


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
        hidden: frozenset[str] = frozenset(),
        visitor_ranker: Ranker | None = None,
        recent_ranker: Ranker | None = None,
        category_hashes: CategoryHashes | None = None,
    ) -> None:
        self.candidates = candidates
        self.ranker = ranker
        # Visitors (unknown users with recent items) and known users' requests with recent items are each ranked by
        # a model trained on such requests, when there is one; stored histories alone by ``ranker``.
        self.visitor_ranker = visitor_ranker
        self.recent_ranker = recent_ranker
        self.view = view
        self.n_candidates = n_candidates
        # Snapshot row of each candidate-model user, fixed per view.
        self._user_rows = view.user_rows(list(candidates.user_ids))
        self.hidden = hidden
        index = candidates.item_index
        hidden_items = [index[i] for i in hidden if i in index]
        self._hidden = np.zeros(candidates.n_items, dtype=bool)
        self._hidden[hidden_items] = True
        self._any_hidden = bool(hidden_items)
        self._category_hashes = category_hashes  # of this view's values: built on first use, kept by with_hidden

    def with_view(self, view: FeatureView) -> TwoStageRecommender:
        """The same models over another feature snapshot."""
        return TwoStageRecommender(
            self.candidates, self.ranker, view, self.n_candidates, self.hidden, self.visitor_ranker, self.recent_ranker
        )

    def with_hidden(self, hidden: frozenset[str]) -> TwoStageRecommender:
        """The same models and snapshot with another list of hidden item ids (never recommended)."""
        return TwoStageRecommender(
            self.candidates,
            self.ranker,
            self.view,
            self.n_candidates,
            frozenset(hidden),
            self.visitor_ranker,
            self.recent_ranker,
            self._category_hashes,
        )

    @property
    def category_hashes(self) -> CategoryHashes | None:
        """CatBoost's hash of every categorical value of this snapshot (one CatBoost call, ~30 ms for MovieLens'
        818 values), so the rankers score a request's rows as numpy arrays; ``None`` without a ranker."""
        if self._category_hashes is None and self.ranker is not None:
            names = self.ranker.names
            self._category_hashes = self.ranker.category_hashes(self.view.category_values(names))
        return self._category_hashes

    def check_fast_scoring(self, users: int = 8) -> bool:
        """Score a few known users' rows both ways, numpy arrays and CatBoost, with every ranker; on any
        difference (a hash misread from CatBoost's export, an export a new CatBoost writes otherwise) the arrays
        are not used over this snapshot: logged, and CatBoost scores every row. Where a pipeline goes into service
        (serving/runtime.py), before any request. A guard against a systematic misreading, not a proof: the users
        are spread over the candidate model's, and a value none of them has is not checked."""
        hashes = self.category_hashes
        known = self.candidates.user_ids
        spread = np.unique(np.linspace(0, len(known) - 1, min(users, len(known))).astype(np.int64))
        queries = [Query(str(u)) for u in known[spread]]
        if hashes is None or not queries:
            return True
        indices = np.array([self.candidates.user_index[q.user_id] for q in queries], dtype=np.int64)
        numeric, categorical = self.pair_rows(indices, self.candidate_lists(queries))
        codes = hashes.codes(categorical)
        rankers = {id(r): r for r in (self.ranker, self.visitor_ranker, self.recent_ranker) if r is not None}
        for ranker in rankers.values():
            if codes is None or ranker.trees is None:
                continue
            if not np.array_equal(ranker.score(numeric, categorical, codes), ranker.score(numeric, categorical)):
                logger.error(
                    "the rankers' numpy trees disagree with CatBoost on %s: CatBoost scores every row",
                    self.view.version,
                )
                self._category_hashes = CategoryHashes({}, usable=False)
                return False
        return True

    def _codes(self, categorical: np.ndarray, names: FeatureNames, one_user: bool = False) -> np.ndarray | None:
        """The rows' categorical hashes for the rankers' numpy trees; ``None`` sends the rows to CatBoost: past
        ``FAST_ROWS`` (CatBoost's loop is cheaper per row once its set-up is paid) or with a value the snapshot
        does not have (an attribute a request brings).

        ``one_user``: the rows are one user's candidates. When every categorical column is the user's, the rows
        are alike, and one row's hashes, seen as every row's (stride 0, read-only), stand for all of them.
        """
        hashes = self.category_hashes
        if hashes is None or len(categorical) > FAST_ROWS:
            return None
        if one_user and len(categorical) and self._user_categories_only(names):
            return hashes.codes(categorical[:1], repeated=len(categorical))
        return hashes.codes(categorical)

    def _user_categories_only(self, names: FeatureNames) -> bool:
        """Whether every categorical column among ``names`` is a user column (pair rows of one user then agree)."""
        columns = self.view.columns
        return all(name in columns and columns[name].scope == "user" for name in names.categorical)

    @cached_property
    def unit_vectors(self) -> np.ndarray:
        """ALS item factors scaled to unit length: cosine similarity is a dot product."""
        return unit_rows(self.candidates.als.item_factors)

    def check(self, queries: list[Query]) -> None:
        """Raise :class:`stages.rules.RuleError` for a query whose filters this catalogue cannot apply."""
        for query in queries:
            self.view.catalogue.check(query.rules)

    def recommend(self, queries: list[Query]) -> list[Recommendation]:
        """Answer queries in order; users with a history (stored or recent) are scored together."""
        self.check(queries)
        users = [self._user(q) for q in queries]
        ranked = [i for i, user in enumerate(users) if user.rankable]
        answers = (
            dict(zip(ranked, self._rank([queries[i] for i in ranked], [users[i] for i in ranked]), strict=True))
            if ranked
            else {}
        )
        return [answers[i] if i in answers else self._cold_start(q, users[i]) for i, q in enumerate(queries)]

    def popular_baseline(self, queries: list[Query]) -> list[Recommendation]:
        """The popularity list for every user, known or not, their own items left out (with ``exclude_seen``).

        An online experiment's baseline arm (serving/experiments.py): what the two stages must beat on live
        traffic, as the backtest's popularity rows are what they must beat offline.
        """
        self.check(queries)
        answers = []
        for query in queries:
            user = self._user(query)
            seen = self.candidates.seen_items(user.index) if query.exclude_seen else np.empty(0, np.int64)
            if query.exclude_seen and user.recent is not None:
                seen = np.concatenate([seen, user.recent.items])
            answers.append(self._cold_start(query, user, seen.astype(np.int64), baseline=True))
        return answers

    def filtered_count(self, query: Query) -> int:
        """Catalogue items a query may not get, each once, for metrics.

        Seen (stored and recent, with ``exclude_seen``), excluded, outside the
        query's filters or hidden: every reason an item is kept out of the answer.
        """
        kept_out = []
        if query.exclude_seen:
            # Stored items are unique per user: the CSR matrix sums repeats.
            kept_out.append(self.candidates.seen_items(self.candidates.user_index.get(query.user_id, -1)))
            if query.recent_items:
                # Only which items: the order and ages :meth:`_user` works out are not needed to count them.
                index = self.candidates.item_index
                recent = [index[e.item_id] for e in query.recent_items if e.item_id in index]
                kept_out.append(np.array(recent, dtype=np.int64))
        if query.exclude_items or query.filters or self._any_hidden:
            kept_out.append(self._blocked(query))  # exclusions, filters, hidden items
        if len(kept_out) <= 1 and not query.exclude_items:  # one unique set: the common request, counted as is
            return len(kept_out[0]) if kept_out else 0
        removed = np.zeros(self.candidates.n_items, dtype=bool)
        for items in kept_out:
            removed[items] = True
        return int(removed.sum())

    def allowed(self, filters: Filters) -> np.ndarray | None:
        """Items the filters and the hidden list let through (``None``: every item)."""
        mask = self.view.catalogue.mask(filters)
        if not self._any_hidden:
            return mask
        return ~self._hidden if mask is None else mask & ~self._hidden

    def similar(self, item: int, k: int, filters: Filters = ()) -> tuple[list[str], list[float], list[str | None]]:
        """Ids, cosine scores and titles of the ``k`` items closest to ``item`` that the rules allow."""
        allowed = self.allowed(filters)
        if allowed is None:
            items, scores = self.candidates.similar_items(item, k)
        else:
            cosine = self.unit_vectors @ self.unit_vectors[item]
            cosine[~allowed] = -np.inf
            cosine[item] = -np.inf
            items = ranking(cosine)[:k]
            items = items[np.isfinite(cosine[items])]
            scores = cosine[items]
        return (
            [str(i) for i in self.candidates.item_ids[items]],
            [round(float(s), 6) for s in scores],
            list(self.view.titles[items]),
        )

    def _excluded(self, query: Query) -> np.ndarray:
        index = self.candidates.item_index
        return np.array([index[i] for i in query.exclude_items if i in index], dtype=np.int64)

    def _blocked(self, query: Query) -> np.ndarray:
        """Item indices a query may not get: its exclusions, and what the filters and hidden list leave out."""
        excluded = self._excluded(query)
        allowed = self.allowed(query.rules)
        if allowed is None:
            return excluded
        blocked = ~allowed
        blocked[excluded] = True
        return np.flatnonzero(blocked)

    def _user(self, query: Query) -> _User:
        """Resolve a query's user and recent items (newest first; ties by item id, as the features order them)."""
        index = self.candidates.user_index.get(query.user_id, -1)
        row = int(self._user_rows[index]) if index >= 0 else self.view.user_row.get(query.user_id, -1)
        item_index = self.candidates.item_index
        known = [e for e in query.recent_items if e.item_id in item_index]
        if not known:
            return _User(index, row, None, None, len(query.recent_items))
        # Two stable sorts: item id descending, then age ascending (the second is needless when every item came
        # without a time, as most do: all are "now").
        known.sort(key=_item_id, reverse=True)
        as_of = self.view.info.get("data_end", 0)
        ages = [0.0 if e.timestamp is None else max(as_of - e.timestamp, 0) / DAY for e in known]
        if any(ages):
            order = sorted(range(len(known)), key=ages.__getitem__)
            known, ages = [known[i] for i in order], [ages[i] for i in order]
        recent = Recent(
            items=np.array([item_index[e.item_id] for e in known], dtype=np.int64),
            weights=np.array([e.weight for e in known], dtype=np.float32),
        )
        return _User(index, row, recent, np.array(ages, dtype=np.float32), len(query.recent_items) - len(known))

    def rankable(self, queries: list[Query]) -> list[bool]:
        """Which queries the two stages answer (a stored or a recent history); the others get popular items."""
        return [self._user(q).rankable for q in queries]

    def candidate_lists(self, queries: list[Query]) -> CandidateBatch:
        """Stage one: every source's candidates, merged, in query order (users with a history only)."""
        return self._candidate_lists(queries, [self._user(q) for q in queries])

    def _candidate_lists(self, queries: list[Query], users: list[_User]) -> CandidateBatch:
        indices = np.array([u.index for u in users], dtype=np.int64)
        # One pool per user and page size, whatever the offset: pages then partition one ranking (a pool that grew
        # with the offset ranked each page over other candidates, and pages overlapped). Queries group by
        # (seen flag, pool depth).
        groups = [(q.exclude_seen, max(self.n_candidates, q.k)) for q in queries]
        slots: dict[int, tuple[CandidateBatch, int]] = {}
        for flag, n in sorted(set(groups)):
            rows = [i for i, g in enumerate(groups) if g == (flag, n)]
            batch = self.candidates.top_n(
                indices[rows],
                n,
                flag,
                [self._blocked(queries[i]) for i in rows],
                [users[i].recent for i in rows],
            )
            slots.update({row: (batch, slot) for slot, row in enumerate(rows)})
        return CandidateBatch.gather([slots[i] for i in range(len(queries))])

    def query_rows(
        self, queries: list[Query], names: FeatureNames
    ) -> tuple[CandidateBatch, tuple[np.ndarray, np.ndarray]]:
        """Candidates and ranker rows for queries as the request path builds them (training reuses it)."""
        users = [self._user(q) for q in queries]
        batch = self._candidate_lists(queries, users)
        indices = np.array([u.index for u in users], dtype=np.int64)
        return batch, self.pair_rows(indices, batch, names, self._fresh_batch(queries, users))

    def rank(self, queries: list[Query], batch: CandidateBatch) -> list[Recommendation]:
        """Stage two: re-rank each query's candidates and keep its top k (ALS order without a ranker)."""
        return self._rank(queries, [self._user(q) for q in queries], batch)

    def _rank(
        self, queries: list[Query], users: list[_User], batch: CandidateBatch | None = None
    ) -> list[Recommendation]:
        """Steps 2 to 6 for users with a history: candidates, rows, scores, then each query's page and answer."""
        batch = self._candidate_lists(queries, users) if batch is None else batch
        lengths = [len(c) for c in batch.items]
        starts = np.cumsum([0, *lengths])
        numeric = categorical = None
        if self.ranker is None:
            final = batch.scores
        else:
            indices = np.array([u.index for u in users], dtype=np.int64)
            numeric, categorical = self.pair_rows(indices, batch, fresh=self._fresh_batch(queries, users))
            scores = self._score_rows(numeric, categorical, users, lengths)
            # A lone query's scores are its own: np.split costs more than the prior does.
            final = [scores] if len(lengths) == 1 else np.split(scores, starts[1:-1])
        out = []
        for slot, (query, user, cand, score) in enumerate(zip(queries, users, batch.items, final, strict=True)):
            order = self._page(query, cand, score)
            notes = [messages.recent_note(user.recent_use)] if user.recent is not None or user.ignored else []
            notes += self._rule_notes(query, len(order), pool=self._pool_if_it_ended(query, len(order), len(cand)))
            answer = self._answer(query, cand[order], score[order], TWO_STAGE, "; ".join(notes) or None)
            if query.explain:
                rows = starts[slot] + order
                shown = (
                    None
                    if numeric is None or categorical is None  # both set with a ranker, neither without
                    else (self._ranker_of(user), numeric[rows], categorical[rows])
                )
                answer.explanations = self._explain(user, cand[order], shown)
            out.append(answer)
        return out

    def _page(self, query: Query, cand: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Positions of a query's page among its candidates: ranked once to its depth, re-ranked for diversity."""
        order = np.argsort(-score, kind="stable")  # ties by candidate order, as a lexsort on (order, -score) would
        if query.diversity > 0:
            order = mmr(order, score[order], self.unit_vectors[cand[order]], query.diversity, query.depth)
        return order[query.offset : query.depth]

    def _pool_if_it_ended(self, query: Query, found: int, pool: int) -> int | None:
        """The candidate pool's size when its depth, not the catalogue, cut a page short (None otherwise).

        Candidates are items the query may get, so items it may get outside the pool mean the pool ended first.
        Counted only for a short page: a full one says nothing.
        """
        if found >= query.k:
            return None
        return pool if pool < self.candidates.n_items - self.filtered_count(query) else None

    def _rule_notes(self, query: Query, found: int, pool: int | None = None) -> list[str]:
        """What the filters left and why a page is short (never silent); nothing for a plain full answer."""
        ruled = bool(query.filters) or self._any_hidden
        return messages.rule_notes(self.view.catalogue.mask(query.rules), found, query.k, query.offset, ruled, pool)

    def _history(self, user: _User) -> np.ndarray:
        """The user's items, ascending: stored and recent, each once."""
        stored = self.candidates.seen_items(user.index).astype(np.int64, copy=False)
        if user.recent is None and self.candidates.seen_canonical:
            return stored  # a canonical CSR row is already sorted and free of repeats
        recent = user.recent.items if user.recent is not None else np.empty(0, np.int64)
        return np.unique(np.concatenate([stored, recent]))

    def _explain(
        self, user: _User, items: np.ndarray, shown: tuple[Ranker, np.ndarray, np.ndarray] | None
    ) -> list[Explanation]:
        """``because`` from the user's history, ``reasons`` from the ranker's contributions for the rows shown.

        ``shown`` holds the ranker that scored them and their features (``None`` without a ranker): the
        contributions of a page's few rows cost one more short pass over the trees.
        """
        similar = because(self.unit_vectors, self._history(user), items)
        if shown is None:
            reasons = [["fits your taste: people with similar taste liked it"] for _ in items]
        else:
            ranker, numeric, categorical = shown
            codes = self._codes(categorical, ranker.names, one_user=True)  # the rows of one user's page
            contributions = ranker.contributions(numeric, categorical, codes)
            reasons = self._reasons.of(contributions, items, user.row)
        # Ids and titles of every named item in one gather each, not one numpy lookup per item.
        flat = np.concatenate(similar) if similar else np.empty(0, np.int64)
        ids = [str(i) for i in self.candidates.item_ids[flat].tolist()]
        named = list(zip(ids, self.view.titles[flat].tolist(), strict=True))
        ends = np.cumsum([len(near) for near in similar]).tolist()
        return [
            Explanation(named[end - len(near) : end], why)
            for near, end, why in zip(similar, ends, reasons, strict=True)
        ]

    @cached_property
    def _reasons(self) -> Reasons:
        assert self.ranker is not None  # read only to explain rows a ranker scored (``_explain`` with ``shown``)
        return Reasons(self.view, self.ranker.names.all)

    def _fresh_batch(self, queries: list[Query], users: list[_User]) -> FreshBatch | None:
        """The fresh users of a batch (those with usable recent items), or ``None`` when there are none."""
        fresh = [i for i, u in enumerate(users) if u.recent is not None]
        if not fresh:
            return None
        slots = np.full(len(users), -1, dtype=np.int64)
        slots[fresh] = np.arange(len(fresh))
        recent: list[Recent] = []
        days_ago: list[np.ndarray] = []
        for i in fresh:
            user = users[i]
            assert user.recent is not None and user.days_ago is not None  # ``_user`` sets both or neither
            recent.append(user.recent)
            days_ago.append(user.days_ago)
        view_users = self.view.fresh_users(
            np.array([users[i].row for i in fresh], dtype=np.int64),
            [r.items for r in recent],
            days_ago,
            [r.weights for r in recent],
            [queries[i].user_attributes if users[i].index < 0 else {} for i in fresh],
        )
        return FreshBatch(slots, view_users)

    def pair_rows(
        self,
        users: np.ndarray,
        batch: CandidateBatch,
        names: FeatureNames | None = None,
        fresh: FreshBatch | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows for each user's candidates, users in order, candidates in merged order.

        ``names`` defaults to the ranker's; training passes its own. ``fresh``
        carries the users whose recent items change their features.
        """
        lengths = [len(c) for c in batch.items]
        rows = self._user_rows[np.maximum(users, 0)]
        if fresh is not None:
            rows = np.where(fresh.slots >= 0, fresh.users.rows[np.maximum(fresh.slots, 0)], rows)
        pairs = Pairs(
            user_rows=np.repeat(rows, lengths),
            items=_flat(batch.items, np.int64),
            als_scores=_flat(batch.scores, np.float32),
            cooc_scores=_flat(batch.cooc_scores, np.float32),
            source_ranks={source: _flat(ranks, np.float32) for source, ranks in batch.source_ranks.items()},
            fresh=fresh.users if fresh is not None else None,
            fresh_slots=np.repeat(fresh.slots, lengths) if fresh is not None else None,
            lone=len(lengths) == 1,
        )
        if not names:
            # Without names the ranker's are meant: only the two-stage path (``_rank`` with a ranker) leaves them out.
            assert self.ranker is not None
            names = self.ranker.names
        return self.view.rows(names, pairs)

    def _ranker_of(self, user: _User) -> Ranker:
        """The model that ranks a user's candidates: the visitor ranker for a visitor, the recent-items ranker for a
        known user's request with recent items (each when there is one), the ranker otherwise."""
        if user.index < 0 and self.visitor_ranker is not None:
            return self.visitor_ranker
        if user.index >= 0 and user.recent is not None and self.recent_ranker is not None:
            return self.recent_ranker
        assert self.ranker is not None  # called only on rows a ranker scores (``_rank`` with a ranker)
        return self.ranker

    def _score_rows(
        self, numeric: np.ndarray, categorical: np.ndarray, users: list[_User], lengths: list[int]
    ) -> np.ndarray:
        """Every row's score, each query's rows by its ranker (one call per ranker in the batch: its numpy trees
        for up to ``FAST_ROWS`` rows of known categories, CatBoost otherwise)."""
        rankers = [self._ranker_of(user) for user in users]
        codes = self._codes(categorical, rankers[0].names, one_user=len(users) == 1)
        if all(r is rankers[0] for r in rankers):
            return rankers[0].score(numeric, categorical, codes)
        scores = np.empty(len(numeric), dtype=np.float32)
        for ranker in {id(r): r for r in rankers}.values():
            rows = np.repeat([r is ranker for r in rankers], lengths)
            scores[rows] = ranker.score(numeric[rows], categorical[rows], None if codes is None else codes[rows])
        return scores

    def _cold_start(
        self, query: Query, user: _User, seen: np.ndarray | None = None, baseline: bool = False
    ) -> Recommendation:
        """Recent popularity for a user without interactions, reordered by their segments when known.

        Attributes come from the request, else from the users file (a user
        known there but without interactions is not a stranger). ``seen``
        items are left out too, and ``baseline`` says the list is an
        experiment's popularity arm (:meth:`popular_baseline`).
        """
        stored = self.view.stored_attributes(query.user_id)
        attributes = {**stored, **{a: v for a, v in query.user_attributes.items() if v is not None}}
        params = self.candidates.params
        scores, used = cold_start_scores(self.view, self.candidates.cold_share, params.segment_weight, attributes)
        excluded = self._excluded(query) if seen is None else np.concatenate([self._excluded(query), seen])
        picked = popular_page(scores, self.allowed(query.rules), excluded, query.offset, query.k)
        notes = [messages.recent_note(user.recent_use)] if user.ignored else []
        if query.filters or self._any_hidden or query.offset:
            notes += self._rule_notes(query, len(picked))
        message = messages.cold_start_message(
            query.user_id in self.view.user_row,
            params.cold_start_days,
            used,
            bool(attributes) and params.segment_weight == 0,
            notes,
            baseline,
        )
        answer = self._answer(query, picked, scores[picked], POPULAR, message)
        if query.explain:
            why = messages.cold_start_reasons(params.cold_start_days, used, self.view.info.get("buckets", {}))
            answer.explanations = [Explanation([], why) for _ in picked]
        return answer

    def _answer(
        self, query: Query, items: np.ndarray, scores: np.ndarray, strategy: str, message: str | None = None
    ) -> Recommendation:
        items = items.astype(np.int64, copy=False)
        return Recommendation(
            user_id=query.user_id,
            item_ids=[str(i) for i in self.candidates.item_ids[items].tolist()],
            scores=[round(s, 6) for s in scores.tolist()],  # float(s) of each (float32 or float64), in one call
            titles=self.view.titles[items].tolist(),
            strategy=strategy,
            message=message,
            first_rank=query.offset + 1,
        )


def _flat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """One array of a batch's per-query arrays (a lone query's as it is: no concatenation)."""
    if len(arrays) == 1:
        return np.asarray(arrays[0]).astype(dtype, copy=False)
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.empty(0, dtype)
