"""Cold start: recent popularity, reordered by the user's segments when their attributes are known."""

from __future__ import annotations

import pandas as pd

from features.compute import compute_features
from features.schema import Dataset
from stages.candidates import CandidateModel, CandidateParams
from stages.feature_view import FeatureView
from stages.pipeline import Query, TwoStageRecommender


def pipeline_for(dataset: Dataset, **params) -> TwoStageRecommender:
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
    assert newcomer.message.startswith("no interactions yet: most popular in the last 30 days among users with")
    assert "job=y" in newcomer.message
    assert stranger.item_ids == ["b", "c", "a"]
    assert stranger.message == "unknown user: most popular in the last 30 days"


def test_request_attributes_override_the_stored_ones(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    # Job x (u1: drama, a and b) pulls a ahead of c for the same user.
    (answer,) = pipeline.recommend([Query("u3", k=3, user_attributes={"job": "x", "age": 20})])
    assert answer.item_ids[0] in {"a", "b"} and answer.item_ids.index("a") < answer.item_ids.index("c")
    assert answer.message.startswith("unknown user: most popular in the last 30 days among users with job=x")


def test_segment_weight_zero_is_plain_recent_popularity(tiny):
    pipeline = pipeline_for(with_newcomer(tiny), segment_weight=0.0)
    (answer,) = pipeline.recommend([Query("u3", k=3)])
    assert answer.item_ids == ["b", "c", "a"]
    assert answer.message == "no interactions yet: most popular in the last 30 days"


def test_cold_start_honours_exclusions(tiny):
    pipeline = pipeline_for(with_newcomer(tiny))
    (answer,) = pipeline.recommend([Query("u3", k=2, exclude_items=["c"])])
    assert answer.item_ids == ["b", "a"]
