"""Point-in-time correctness: what happens at or after a cut T never changes a feature for T."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.schema import Columns, Dataset
from features.synthetic import SyntheticConfig, generate
from stages.candidates import CandidateModel, CandidateParams
from stages.feature_view import FeatureView
from stages.pipeline import TwoStageRecommender

DAY = 86_400
PARAMS = CandidateParams(factors=8, iterations=5, seed=3)


@pytest.fixture(scope="module")
def history() -> Dataset:
    return generate(SyntheticConfig(n_users=120, n_items=80, n_interactions=4_000, n_clusters=3, seed=11))


def with_future(dataset: Dataset, cut: int) -> Dataset:
    """The same data, plus a burst of interactions from the cut on: new users, heavy repeats, a new item."""
    inter = dataset.interactions
    rng = np.random.default_rng(5)
    users = inter[Columns.user].unique()
    items = inter[Columns.item].unique()
    n = 2_000
    future = pd.DataFrame(
        {
            Columns.user: np.concatenate([rng.choice(users, n - 20), [f"newcomer{i}" for i in range(20)]]),
            Columns.item: np.concatenate([rng.choice(items[:3], n - 20), ["brand-new"] * 20]),
            Columns.timestamp: cut + rng.integers(0, 30 * DAY, n),
            Columns.weight: np.float32(5.0),
        }
    )
    future.loc[0, Columns.timestamp] = cut  # exactly at the cut counts as the future too
    return Dataset(pd.concat([inter, future], ignore_index=True), dataset.users, dataset.items)


def test_no_feature_table_for_t_changes_when_later_interactions_are_added(history):
    cut = int(history.interactions[Columns.timestamp].quantile(0.7))
    before = compute_features(history, as_of=cut)
    after = compute_features(with_future(history, cut), as_of=cut)
    for name in ("items", "users", "affinity", "segments"):
        pd.testing.assert_frame_equal(getattr(before, name), getattr(after, name), obj=name)
    assert before.info == after.info
    # ... and the future was not empty: computed on everything, the tables do change.
    everything = compute_features(with_future(history, cut))
    assert not everything.items["pop_7d"].equals(before.items["pop_7d"].reindex(everything.items.index))


def test_no_ranker_row_for_t_changes_when_later_interactions_are_added(history):
    cut = int(history.interactions[Columns.timestamp].quantile(0.7))
    rows = []
    for dataset in (history, with_future(history, cut)):
        inter = dataset.interactions
        candidates = CandidateModel.fit(inter[inter[Columns.timestamp] < cut], PARAMS, as_of=cut)
        view = FeatureView(compute_features(dataset, as_of=cut), candidates.item_ids, candidates.als.item_factors)
        pipeline = TwoStageRecommender(candidates, None, view, n_candidates=30)
        users = np.arange(len(candidates.user_ids))
        batch = candidates.top_n(users, 30)
        rows.append((batch, pipeline.pair_rows(users, batch, view.available())))
    (batch_a, (numeric_a, categorical_a)), (batch_b, (numeric_b, categorical_b)) = rows
    assert all(np.array_equal(a, b) for a, b in zip(batch_a.items, batch_b.items, strict=True))
    np.testing.assert_array_equal(numeric_a, numeric_b)
    np.testing.assert_array_equal(categorical_a, categorical_b)


def test_time_features_are_measured_from_the_cut(tiny):
    cut = 31 * DAY  # u1's two interactions (days 0, 1) and u2's first (day 2) are before it
    tables = compute_features(tiny, as_of=cut)
    assert tables.info["data_end"] == cut
    assert tables.users.loc["u1", "days_since_last"] == pytest.approx(30.0)
    assert tables.items.loc["a", "item_age_days"] == pytest.approx(31.0)
    assert tables.items.loc["a", "pop_all"] == 2
    assert tables.items.loc["a", "pop_30d"] == 1  # day 0 is 31 days back, day 2 is inside the window
    assert "c" not in tables.items.index  # first taken on day 60
