"""TwoStageRecommender on six users and six items whose popularity and segments are known exactly."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoost, Pool

from features.compute import compute_features
from features.schema import Dataset, validate_interactions
from stages.candidates import CandidateModel, CandidateParams
from stages.feature_view import FeatureView
from stages.pipeline import POPULAR, TWO_STAGE, Query, RecentEvent, TwoStageRecommender
from stages.ranker import Ranker
from stages.symmetric_trees import CategoryHashes
from train import evaluate

# Who took what. Popularity (distinct users): i0 5, i1 4, i2 3, i3 2, i4 1, i5 1 (ties by id).
# Job "b" (u3, u4, u5) took i2 three times, i0 twice, i1, i3, i4, i5 once each.
TAKEN = {
    "u0": ["i0", "i1", "i3"],
    "u1": ["i0", "i1"],
    "u2": ["i0", "i1"],
    "u3": ["i0", "i2", "i3"],
    "u4": ["i0", "i2", "i5"],
    "u5": ["i1", "i2", "i4"],
}
ITEMS = [f"i{i}" for i in range(6)]


def dataset(titles: dict[str, str] | None = None) -> Dataset:
    rows = [(u, i, t) for t, (u, i) in enumerate((u, i) for u, items in TAKEN.items() for i in items)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(weight=1.0)
    users = pd.DataFrame({"job": ["a", "a", "a", "b", "b", "b"]}, index=pd.Index(list(TAKEN), name="user_id"))
    items = pd.DataFrame(
        {"title": [(titles or {}).get(i, f"Title {i}") for i in ITEMS]}, index=pd.Index(ITEMS, name="item_id")
    )
    return Dataset(validate_interactions(frame), users, items)


class ReversingRanker:
    """Scores each user's candidates 0, 1, 2, ... in ALS order: the ranker's order is ALS order reversed."""

    def __init__(self, names) -> None:
        self.names = names
        self.calls = 0

    def score(self, numeric: np.ndarray, categorical: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        self.calls += 1
        return np.arange(len(numeric), dtype=np.float32)

    def category_hashes(self, values: Iterable[str]) -> CategoryHashes:
        return CategoryHashes({})


@pytest.fixture(scope="module")
def parts() -> tuple[CandidateModel, FeatureView]:
    data = dataset()
    params = CandidateParams(factors=2, iterations=5, seed=1, segment_weight=1.0)
    candidates = CandidateModel.fit(data.interactions, params)
    view = FeatureView(compute_features(data), candidates.item_ids, candidates.als.item_factors, "v1")
    return candidates, view


@pytest.fixture()
def als_only(parts) -> TwoStageRecommender:
    candidates, view = parts
    return TwoStageRecommender(candidates, None, view, n_candidates=6)


def test_popularity_is_as_counted(parts):
    candidates, _ = parts
    assert candidates.item_ids[candidates.popular].tolist() == ITEMS


def test_known_user_gets_two_stage_unseen_items_best_first(als_only):
    [answer] = als_only.recommend([Query("u0", k=10)])
    assert answer.strategy == TWO_STAGE and answer.user_id == "u0"
    assert sorted(answer.item_ids) == ["i2", "i4", "i5"]  # everything u0 has not seen
    assert answer.message == "only 3 items left to recommend: the rest are seen or excluded"
    [full] = als_only.recommend([Query("u0", k=3)])
    assert full.message is None and full.item_ids == answer.item_ids
    assert answer.scores == sorted(answer.scores, reverse=True)
    assert answer.titles == [f"Title {i}" for i in answer.item_ids]


def test_a_user_with_nothing_left_is_told_so(als_only):
    [answer] = als_only.recommend([Query("u0", k=5, exclude_items=["i2", "i4", "i5"])])
    assert answer.item_ids == [] and answer.strategy == TWO_STAGE
    assert answer.message == (
        "nothing left to recommend: the user has already taken (or excluded) every item in the catalogue"
    )


def test_k_and_exclude_seen(als_only):
    [top] = als_only.recommend([Query("u0", k=2)])
    [everything] = als_only.recommend([Query("u0", k=6, exclude_seen=False)])
    assert len(top.item_ids) == 2 and top.item_ids == [i for i in everything.item_ids if i in top.item_ids][:2]
    assert sorted(everything.item_ids) == ITEMS


def test_exclude_items_honoured_for_known_and_unknown_users(als_only):
    [known] = als_only.recommend([Query("u0", k=10, exclude_items=["i2", "not-an-item"])])
    assert sorted(known.item_ids) == ["i4", "i5"]
    [unknown] = als_only.recommend([Query("nobody", k=3, exclude_items=["i1", "not-an-item"])])
    assert unknown.item_ids == ["i0", "i2", "i3"]


def test_unknown_user_gets_popularity_in_exact_order(als_only):
    [answer] = als_only.recommend([Query("nobody", k=4)])
    assert answer.strategy == POPULAR and answer.message == "unknown user: most popular in the last 30 days"
    assert answer.item_ids == ["i0", "i1", "i2", "i3"]
    assert answer.scores == [5 / 16, 4 / 16, 3 / 16, 2 / 16]  # shares of the 16 interactions
    assert answer.titles == ["Title i0", "Title i1", "Title i2", "Title i3"]


def test_segment_cold_start_adds_the_segment_share_to_popularity(als_only):
    # Job b's shares: i2 3/9, i0 2/9, the rest 1/9; plus popularity 5/16, 4/16, 3/16, 2/16, 1/16, 1/16.
    [answer] = als_only.recommend([Query("nobody", k=6, user_attributes={"job": "b", "shoe_size": 44})])
    assert answer.strategy == POPULAR
    assert answer.message == "unknown user: most popular in the last 30 days, reordered by what users with job=b take"
    assert answer.item_ids == ["i0", "i2", "i1", "i3", "i4", "i5"]
    assert answer.scores[:2] == [pytest.approx(5 / 16 + 2 / 9), pytest.approx(3 / 16 + 3 / 9)]
    [unmatched] = als_only.recommend([Query("nobody", k=2, user_attributes={"job": "never-seen"})])
    assert unmatched.item_ids == ["i0", "i1"]
    assert unmatched.message == "unknown user: most popular in the last 30 days"


def test_a_heavier_segment_weight_lets_the_segment_lead(parts):
    _, view = parts
    heavy = CandidateModel.fit(
        dataset().interactions, CandidateParams(factors=2, iterations=5, seed=1, segment_weight=3.0)
    )
    pipeline = TwoStageRecommender(heavy, None, view, n_candidates=6)
    [answer] = pipeline.recommend([Query("nobody", k=2, user_attributes={"job": "b"})])
    assert answer.item_ids == ["i2", "i0"]  # 3/16 + 3 * 3/9 > 5/16 + 3 * 2/9


def test_the_popularity_baseline_gives_known_users_the_popular_items_they_have_not_taken(als_only):
    """u0 has taken i0, i1, i3 (everything but i2, i4, i5): popularity order without them, or with them."""
    known, unknown, everything = als_only.popular_baseline(
        [Query("u0", k=3), Query("nobody", k=2), Query("u0", k=3, exclude_seen=False)]
    )
    assert known.strategy == POPULAR and known.item_ids == ["i2", "i4", "i5"]
    assert known.message == (  # u0's own segment reorders the list, as it would a cold start's
        "popularity baseline of an experiment: most popular in the last 30 days, "
        "reordered by what users with job=a take"
    )
    assert unknown.item_ids == ["i0", "i1"]
    # Without exclude_seen, u0's list is the popularity list its segment reorders, taken items and all.
    [cold] = als_only.recommend([Query("nobody", k=3, user_attributes={"job": "a"})])
    assert everything.item_ids == cold.item_ids and "i0" in everything.item_ids
    fresh = Query("u0", k=2, recent_items=[RecentEvent("i2")])
    [with_recent] = als_only.popular_baseline([fresh])
    assert with_recent.item_ids == ["i4", "i5"]  # what the request brings is seen too


def test_mixed_queries_answered_in_order(als_only):
    queries = [Query("nobody", k=2), Query("u0", k=2), Query("u5", k=2), Query("other", k=1)]
    answers = als_only.recommend(queries)
    assert [a.user_id for a in answers] == ["nobody", "u0", "u5", "other"]
    assert [a.strategy for a in answers] == [POPULAR, TWO_STAGE, TWO_STAGE, POPULAR]
    assert answers[1] == als_only.recommend([Query("u0", k=2)])[0]  # batching changes nothing


def test_ranker_decides_the_order(parts, als_only):
    candidates, view = parts
    ranker = ReversingRanker(view.available())
    reranked = TwoStageRecommender(candidates, ranker, view, n_candidates=6)
    [als] = als_only.recommend([Query("u0", k=3)])
    [answer] = reranked.recommend([Query("u0", k=3), Query("u1", k=3)])[:1]
    assert ranker.calls == 1  # both users scored in one call
    assert answer.item_ids == als.item_ids[::-1] and answer.scores == [2.0, 1.0, 0.0]


def test_filtered_count(als_only):
    assert als_only.filtered_count(Query("u0", exclude_items=["i2", "i4"])) == 3 + 2
    assert als_only.filtered_count(Query("u0", exclude_seen=False, exclude_items=["i2"])) == 1
    assert als_only.filtered_count(Query("nobody", exclude_items=["i2"])) == 1
    assert als_only.filtered_count(Query("nobody")) == 0
    # Each catalogue item once: an excluded item u0 has seen (i0), a repeat and an unknown id add nothing.
    assert als_only.filtered_count(Query("u0", exclude_items=["i0", "i2", "i2", "not-an-item"])) == 3 + 1


def test_filtered_count_of_a_plain_request_is_the_count_of_the_full_mask(als_only):
    """A request with only the stored history kept out is counted without a mask; it counts the same."""
    for user in [*als_only.candidates.user_ids, "nobody"]:
        for seen in (True, False):
            plain = als_only.filtered_count(Query(str(user), exclude_seen=seen))
            masked = als_only.filtered_count(Query(str(user), exclude_seen=seen, exclude_items=["not-an-item"]))
            assert plain == masked, user
    assert als_only.filtered_count(Query("u0")) == 3


def test_with_view_swaps_features_and_keeps_models(parts, als_only):
    candidates, _ = parts
    renamed = FeatureView(
        compute_features(dataset({"i0": "Renamed"})), candidates.item_ids, candidates.als.item_factors, "v2"
    )
    swapped = als_only.with_view(renamed)
    assert swapped.view is renamed and als_only.view.version == "v1"
    assert swapped.candidates is als_only.candidates and swapped.ranker is als_only.ranker
    assert swapped.n_candidates == als_only.n_candidates
    assert swapped.recommend([Query("nobody", k=1)])[0].titles == ["Renamed"]
    assert als_only.recommend([Query("nobody", k=1)])[0].titles == ["Title i0"]
    assert swapped.recommend([Query("u0")])[0].item_ids == als_only.recommend([Query("u0")])[0].item_ids


# -- cold start with stored and request attributes (the tiny dataset of conftest) --------------


def pipeline_for(dataset: Dataset, **params) -> TwoStageRecommender:
    """A pipeline whose cold start gives segments weight 1 unless told otherwise."""
    params = {"segment_weight": 1.0, **params}
    candidates = CandidateModel.fit(dataset.interactions, CandidateParams(factors=2, iterations=3, seed=1, **params))
    view = FeatureView(compute_features(dataset), candidates.item_ids, candidates.als.item_factors)
    return TwoStageRecommender(candidates, None, view, n_candidates=3)


def with_newcomer(tiny: Dataset) -> Dataset:
    """``u3`` is in the users file (job y, like u2) but has no interactions."""
    users = pd.concat([tiny.users, pd.DataFrame({"job": ["y"], "age": [40.0]}, index=pd.Index(["u3"], name="user_id"))])
    return Dataset(tiny.interactions, users, tiny.items)


def test_user_known_only_from_the_users_file_gets_segment_popularity(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    # Last 30 days: b and c once each (a tie, broken by index for a stranger); job y and
    # u2's age band put c (5/9 of u2's weight) ahead of b (3/9) and a (1/9).
    newcomer, stranger = pipeline.recommend([Query("u3", k=3), Query("nobody", k=3)])
    assert newcomer.item_ids == ["c", "b", "a"]
    assert newcomer.strategy == "popular"
    assert newcomer.message.startswith(
        "no interactions yet: most popular in the last 30 days, reordered by what users with"
    )
    assert "job=y" in newcomer.message
    assert stranger.item_ids == ["b", "c", "a"]
    assert stranger.message == "unknown user: most popular in the last 30 days"


def test_attributes_that_match_no_segment_are_ignored_not_an_error(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    (answer,) = pipeline.recommend([Query("nobody", k=3, user_attributes={"age": "abc", "job": None})])
    assert answer.item_ids == ["b", "c", "a"]  # plain recent popularity
    assert answer.message == "unknown user: most popular in the last 30 days"


def test_request_attributes_override_the_stored_ones(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    # Job x (u1: drama, a and b) pulls a ahead of c for the same user.
    (answer,) = pipeline.recommend([Query("u3", k=3, user_attributes={"job": "x", "age": 20})])
    assert answer.item_ids[0] in {"a", "b"} and answer.item_ids.index("a") < answer.item_ids.index("c")
    assert answer.message.startswith(
        "no interactions yet: most popular in the last 30 days, reordered by what users with job=x"
    )


def test_segment_weight_zero_is_plain_recent_popularity(tiny):
    pipeline = pipeline_for(with_newcomer(tiny), segment_weight=0.0)
    (answer,) = pipeline.recommend([Query("u3", k=3)])
    assert answer.item_ids == ["b", "c", "a"]
    assert answer.message == (
        "no interactions yet: most popular in the last 30 days"
        " (attributes not used: segments got no weight in the backtest)"
    )


def test_cold_start_honours_exclusions(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    (answer,) = pipeline.recommend([Query("u3", k=2, exclude_items=["c"])])
    assert answer.item_ids == ["b", "a"]


def test_numpy_trees_that_disagree_with_catboost_are_not_used(parts):
    """The check a pipeline passes before it serves: scores both ways; with hashes that do not match CatBoost's the
    arrays are dropped for that snapshot, and the answers are CatBoost's."""
    candidates, view = parts
    names = view.available()
    assert names.categorical  # the users' job: hashed categories take part
    queries = [Query(str(u), k=4) for u in candidates.user_ids]
    _, (numeric, categorical) = TwoStageRecommender(candidates, None, view, 6).query_rows(queries, names)
    model = CatBoost({"iterations": 20, "depth": 3, "verbose": False, "random_seed": 0, "allow_writing_files": False})
    job = categorical[:, names.categorical.index("cat_job")]
    # Trained with every numeric column 0, so the users' job is the only thing the trees can split on, whatever
    # model this machine's features would give otherwise: misread hashes must then change the scores.
    blank = np.zeros_like(numeric)
    model.fit(Pool(Ranker.data(names, blank, categorical), label=(job == "a") * 2.0 + np.arange(len(job)) % 3))
    assert model.get_feature_importance(prettified=True).set_index("Feature Id").loc["cat_job", "Importances"] > 0
    served = TwoStageRecommender(candidates, Ranker(model, names), view, 6)
    assert served.check_fast_scoring()
    assert served.category_hashes is not None and served.category_hashes.table
    wrong = CategoryHashes({value: code + 1 for value, code in served.category_hashes.table.items()})
    misread = TwoStageRecommender(candidates, Ranker(model, names), view, 6, category_hashes=wrong)
    assert not misread.check_fast_scoring()
    assert misread.category_hashes is not None and not misread.category_hashes.usable
    assert misread._codes(categorical[:5], names) is None and served._codes(categorical[:5], names) is not None
    # One user's rows (the job is a user column): one row's hashes stand for all of them, as their own would.
    rows = served.query_rows([queries[0]], names)[1][1]
    assert len(rows) > 1 and (rows == rows[0]).all()
    np.testing.assert_array_equal(served._codes(rows, names, one_user=True), served._codes(rows, names))
    assert [a.scores for a in misread.recommend(queries)] == [a.scores for a in served.recommend(queries)]


def test_evaluation_answers_every_user_the_same_in_batches_of_any_size(parts, monkeypatch):
    """pipeline_lists answers a few users at a time (memory at 20M interactions): the lists cannot depend on it."""
    candidates, view = parts
    names = view.available()
    users = [str(u) for u in candidates.user_ids]
    _, (numeric, categorical) = TwoStageRecommender(candidates, None, view, 6).query_rows(
        [Query(u) for u in users], names
    )
    model = CatBoost({"iterations": 20, "depth": 3, "verbose": False, "random_seed": 0, "allow_writing_files": False})
    model.fit(Pool(Ranker.data(names, numeric, categorical), label=np.arange(len(numeric)) % 5))
    pipeline = TwoStageRecommender(candidates, Ranker(model, names), view, 6)
    whole = evaluate.pipeline_lists(pipeline, users)
    batches: list[int] = []
    recommend = pipeline.recommend
    monkeypatch.setattr(pipeline, "recommend", lambda queries: batches.append(len(queries)) or recommend(queries))
    monkeypatch.setattr(evaluate, "EVAL_BATCH_USERS", 4)
    assert evaluate.pipeline_lists(pipeline, users) == whole
    assert batches == [4, 2] and list(whole) == users
