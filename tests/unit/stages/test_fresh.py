"""Recent items in a request: the user is featured as if the snapshot already held those interactions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.families.user_activity import REQUEST_ITEMS
from features.schema import Columns, Dataset
from features.synthetic import SyntheticConfig, generate
from stages.candidates import CandidateModel, CandidateParams, Recent
from stages.feature_view import FeatureView
from stages.pipeline import Query, RecentEvent, TwoStageRecommender
from stages.symmetric_trees import CategoryHashes

PARAMS = CandidateParams(factors=8, iterations=5, seed=3)


@pytest.fixture(scope="module")
def history() -> Dataset:
    return generate(SyntheticConfig(n_users=120, n_items=80, n_interactions=4_000, n_clusters=3, seed=11))


def _events(rows: pd.DataFrame) -> list[RecentEvent]:
    return [
        RecentEvent(str(r[Columns.item]), int(r[Columns.timestamp]), float(r[Columns.weight]))
        for _, r in rows.iterrows()
    ]


def _user_dependent(view: FeatureView) -> list[str]:
    """Columns that describe the user's own history.

    Item columns and the segment shares (an item's popularity within a
    segment) are statistics over everyone: one user's new interactions move
    them a little in a snapshot, and a request rightly does not.
    ``request_items`` says how many items the request brought: its one
    intended difference.
    """
    return [
        n
        for n in view.available().all
        if view.columns[n].scope != "item" and not n.startswith("seg_") and n != REQUEST_ITEMS
    ]


@pytest.mark.parametrize(
    ("held_out", "unknown_first"),
    # 3: the snapshot's latest items fill the rest; 12: more than RECENT_ITEMS in the request itself;
    # "all": a user the snapshot has never seen; an unknown item first: skipped, the rest used.
    [(3, False), (12, False), ("all", False), (3, True)],
)
def test_fresh_features_equal_a_snapshot_that_holds_the_recent_interactions(history, held_out, unknown_first):
    """Snapshot without a user's last interactions + those interactions in the request == snapshot with them."""
    cut = int(history.interactions[Columns.timestamp].quantile(0.7))
    before = history.interactions[history.interactions[Columns.timestamp] < cut]
    user = before[Columns.user].value_counts().index[5]
    mine = before[before[Columns.user] == user].sort_values(Columns.timestamp)
    held = mine if held_out == "all" else mine.tail(held_out)
    without = Dataset(history.interactions.drop(held.index), history.users, history.items)

    candidates = CandidateModel.fit(before, PARAMS, as_of=cut)
    vectors = candidates.als.item_factors
    full = TwoStageRecommender(
        candidates, None, FeatureView(compute_features(history, as_of=cut), candidates.item_ids, vectors)
    )
    fresh = TwoStageRecommender(
        candidates, None, FeatureView(compute_features(without, as_of=cut), candidates.item_ids, vectors)
    )
    unknown = [RecentEvent("no-such-item", int(held[Columns.timestamp].max()), 1.0)] if unknown_first else []
    query = Query(user, recent_items=unknown + _events(held))
    users = np.array([candidates.user_index[user]])
    batch = candidates.top_n(users, 40)
    names = full.view.available()
    expected, expected_cat = full.pair_rows(users, batch, names)
    who = fresh._user(query)
    got, got_cat = fresh.pair_rows(users, batch, names, fresh._fresh_batch([query], [who]))
    stale, _ = fresh.pair_rows(users, batch, names)

    columns = [names.numeric.index(n) for n in _user_dependent(full.view) if n in names.numeric]
    np.testing.assert_allclose(got[:, columns], expected[:, columns], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_cat, expected_cat)
    np.testing.assert_array_equal(got[:, names.numeric.index(REQUEST_ITEMS)], len(held))
    # ... and the recent items did change something: without them the user looks different.
    assert not np.allclose(stale[:, columns], expected[:, columns], equal_nan=True)


def test_recent_items_are_not_proposed_again_and_seed_the_sources(history):
    candidates = CandidateModel.fit(history.interactions, PARAMS)
    user = 7
    plain = candidates.top_n(np.array([user]), 20)
    recent = Recent(items=plain.items[0][:2], weights=np.ones(2, np.float32))
    fresh = candidates.top_n(np.array([user]), 20, recent=[recent])
    assert not set(recent.items.tolist()) & set(fresh.items[0].tolist())
    # The ALS vector was re-solved: scores for the same items moved.
    common = np.intersect1d(plain.items[0], fresh.items[0])
    before = dict(zip(plain.items[0].tolist(), plain.scores[0].tolist(), strict=True))
    after = dict(zip(fresh.items[0].tolist(), fresh.scores[0].tolist(), strict=True))
    assert any(abs(before[i] - after[i]) > 1e-4 for i in common.tolist())


def test_a_user_known_only_by_recent_items_gets_candidates_near_them(history):
    candidates = CandidateModel.fit(history.interactions, PARAMS)
    taste = candidates.latest[3][:5]
    batch = candidates.top_n(np.array([-1]), 10, recent=[Recent(taste, np.ones(len(taste), np.float32))])
    assert len(batch.items[0]) >= 10
    assert not set(taste.tolist()) & set(batch.items[0].tolist())
    # Its ALS vector is the one implicit solves for those items alone.
    from_items = candidates.user_vectors(np.array([-1]), [Recent(taste, np.ones(len(taste), np.float32))])
    assert np.linalg.norm(from_items[0]) > 0


def test_recent_items_reach_the_answer_and_the_message(history):
    candidates = CandidateModel.fit(history.interactions, PARAMS)
    view = FeatureView(compute_features(history), candidates.item_ids, candidates.als.item_factors)
    pipeline = TwoStageRecommender(candidates, None, view, n_candidates=30)
    taken = [str(candidates.item_ids[i]) for i in candidates.latest[3][:3]]
    events = [RecentEvent(i) for i in taken] + [RecentEvent("not-an-item")]
    known, anonymous, nothing_known = pipeline.recommend(
        [
            Query(str(candidates.user_ids[0]), k=5, recent_items=events),
            Query("visitor", k=5, recent_items=events),
            Query("visitor", k=5, recent_items=[RecentEvent("not-an-item")]),
        ]
    )
    assert not set(taken) & set(known.item_ids)
    assert known.message == "3 recent items used, 1 ignored (not in the model's catalogue)"
    assert anonymous.strategy == "two_stage"
    assert anonymous.message == "unknown user: ranked from 3 recent items, 1 ignored (not in the model's catalogue)"
    assert not set(taken) & set(anonymous.item_ids)
    assert nothing_known.strategy == "popular"
    assert nothing_known.message.endswith("; 0 recent items used, 1 ignored (not in the model's catalogue)")
    # The same query without recent items is answered as before.
    assert pipeline.recommend([Query(str(candidates.user_ids[0]), k=5)])[0].message is None


@pytest.mark.parametrize(
    "case", ["repeats", "new and distinct", "one already stored", "a stored one twice", "the last stored one"]
)
def test_the_re_solved_vector_is_implicits_recalculate_user(history, case):
    """Our numpy solve equals implicit's own (``recalculate_user``), repeats and recent weights included.

    A recent item the stored row holds adds its weight to the stored one (found by a binary search, so the row's
    first and last items are cases of their own); new ones are appended, repeats summed.
    """
    import scipy.sparse as sp

    candidates = CandidateModel.fit(history.interactions, CandidateParams(factors=8, iterations=5, seed=3, alpha=2.0))
    user = 4
    stored_items = candidates.seen_items(user)
    new = np.setdiff1d(np.arange(len(candidates.item_ids)), stored_items)
    items = {
        "repeats": np.array([3, 3, 10]),
        "new and distinct": new[[0, 5, 9]],
        "one already stored": np.array([new[0], stored_items[2], new[4]]),
        "a stored one twice": np.array([stored_items[0], new[3], stored_items[0]]),
        "the last stored one": np.array([stored_items[-1], new[-1], new[1]]),
    }[case]
    extra = Recent(items=items, weights=np.array([1.0, 2.0, 0.5], np.float32))
    ours = candidates.user_vectors(np.array([user, -1]), [extra, extra])
    stored = candidates.seen[user]
    row = stored + sp.csr_matrix((extra.weights, ([0, 0, 0], extra.items)), shape=stored.shape)
    theirs = candidates.als.recalculate_user(0, row.tocsr())
    only_recent = candidates.als.recalculate_user(
        0, sp.csr_matrix((extra.weights, ([0, 0, 0], extra.items)), shape=stored.shape).tocsr()
    )
    np.testing.assert_allclose(ours[0], np.ravel(theirs), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(ours[1], np.ravel(only_recent), rtol=1e-3, atol=1e-5)


def test_a_stored_row_out_of_order_or_with_repeats_re_solves_as_the_canonical_one(history):
    """The re-solve finds stored items by a binary search over the row, which a fitted model keeps sorted, each
    item once; a seen matrix that is not (built elsewhere) is summed and sorted first, so the vector is the same."""
    import copy

    import scipy.sparse as sp

    candidates = CandidateModel.fit(history.interactions, PARAMS)
    altered = copy.copy(candidates)  # before either checks its matrix (the check is cached)
    user, seen = 4, candidates.seen
    start, end = seen.indptr[user], seen.indptr[user + 1]
    stored = seen.indices[start:end]
    extra = Recent(items=np.array([stored[0], stored[-1], stored[0]]), weights=np.array([1.0, 2.0, 0.5], np.float32))
    canonical = candidates.user_vectors(np.array([user]), [extra])
    indices, data = seen.indices.copy(), seen.data.copy()
    indices[start:end], data[start:end] = indices[start:end][::-1], data[start:end][::-1]  # out of order
    indices, data = np.insert(indices, end, stored[1]), np.insert(data, end, 0.0)  # and one item twice
    indptr = seen.indptr.copy()
    indptr[user + 1 :] += 1
    altered.seen = sp.csr_matrix((data, indices, indptr), shape=seen.shape)
    assert not altered.seen_canonical and len(stored) > 2
    np.testing.assert_allclose(altered.user_vectors(np.array([user]), [extra]), canonical, rtol=1e-6, atol=1e-7)


def test_a_batch_mixing_fresh_and_plain_users_gives_each_the_rows_it_gets_alone(history):
    """Rows of fresh and plain users scored together equal each user's rows on their own (both paths of user_state)."""
    candidates = CandidateModel.fit(history.interactions, PARAMS)
    view = FeatureView(compute_features(history), candidates.item_ids, candidates.als.item_factors)
    pipeline = TwoStageRecommender(candidates, None, view, n_candidates=30)
    events = [RecentEvent(str(candidates.item_ids[i]), weight=2.0) for i in candidates.latest[9][:4]]
    queries = [
        Query(str(candidates.user_ids[0]), recent_items=events),
        Query(str(candidates.user_ids[1])),
        Query("visitor", recent_items=events[:2]),
        Query(str(candidates.user_ids[2]), recent_items=events[1:]),
    ]
    names = view.available()
    _, (together, together_cat) = pipeline.query_rows(queries, names)
    alone = [pipeline.query_rows([q], names)[1] for q in queries]
    # Equal up to float rounding: the batch's ALS scores come from one matrix product, a lone user's from another.
    np.testing.assert_allclose(together, np.concatenate([numeric for numeric, _ in alone]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(together_cat, np.concatenate([categorical for _, categorical in alone]))
    # The plain user's rows are the snapshot's: request_items 0 there, the count of recent items elsewhere.
    counts = together[:, names.numeric.index(REQUEST_ITEMS)]
    lengths = [len(numeric) for numeric, _ in alone]
    assert [int(c) for c in counts[np.cumsum([0, *lengths[:-1]])]] == [4, 0, 2, 3]


class _Constant:
    """A stand-in ranker that gives every row its value: an answer's scores say which model ranked it."""

    def __init__(self, value: float, names) -> None:
        self.value, self.names = value, names

    def score(self, numeric: np.ndarray, categorical: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        return np.full(len(numeric), self.value, dtype=np.float32)

    def category_hashes(self, values: Iterable[str]) -> CategoryHashes:
        return CategoryHashes({})


def test_each_query_in_a_batch_is_ranked_by_the_model_for_its_kind_of_request(history):
    candidates = CandidateModel.fit(history.interactions, PARAMS)
    view = FeatureView(compute_features(history), candidates.item_ids, candidates.als.item_factors)
    names = view.available()
    main, visitors, recent = (_Constant(v, names) for v in (1.0, 2.0, 3.0))
    known = str(candidates.user_ids[0])
    events = [RecentEvent(str(candidates.item_ids[i])) for i in candidates.latest[3][:3]]
    queries = [
        Query(known, k=5),
        Query("visitor", k=5, recent_items=events),
        Query(known, k=5, recent_items=events),
        Query(known, k=5, recent_items=[RecentEvent("not-an-item")]),  # no usable recent item: a stored history
    ]
    full = TwoStageRecommender(candidates, main, view, 30, visitor_ranker=visitors, recent_ranker=recent)  # type: ignore[arg-type]
    assert [set(answer.scores) for answer in full.recommend(queries)] == [{1.0}, {2.0}, {3.0}, {1.0}]
    # A model trained before the recent-items ranker existed ranks known users' recent items with the main one.
    older = TwoStageRecommender(candidates, main, view, 30, visitor_ranker=visitors)  # type: ignore[arg-type]
    assert [set(answer.scores) for answer in older.recommend(queries)] == [{1.0}, {2.0}, {1.0}, {1.0}]
