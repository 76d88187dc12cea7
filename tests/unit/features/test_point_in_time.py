"""Point-in-time correctness of the feature tables: nothing at or after a cut T changes a table for T.

The "before" side is the data cut at T (nothing after it exists); the "after"
side is all of it plus a burst of interactions from T on, over every item,
new users and a new item. Stages and training rows are checked the same way
in tests/unit/train/test_point_in_time.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features.compute import compute_features
from features.schema import Columns, Dataset
from features.synthetic import SyntheticConfig, generate
from tests.support import cut_at, with_future

DAY = 86_400


@pytest.fixture(scope="module")
def history() -> Dataset:
    return generate(SyntheticConfig(n_users=120, n_items=80, n_interactions=4_000, n_clusters=3, seed=11))


def test_no_feature_table_for_t_reads_the_future(history):
    cut = int(history.interactions[Columns.timestamp].quantile(0.7))
    before = compute_features(cut_at(history, cut), as_of=cut)
    after = compute_features(with_future(history, cut), as_of=cut)
    for name in ("items", "users", "affinity", "segments"):
        pd.testing.assert_frame_equal(getattr(before, name), getattr(after, name), obj=name)
    assert before.info == after.info
    # ... and the future was not empty: computed on everything, the tables do change.
    everything = compute_features(with_future(history, cut))
    assert not everything.items["pop_7d"].equals(before.items["pop_7d"].reindex(everything.items.index))


def test_time_features_are_measured_from_the_cut(tiny):
    cut = 31 * DAY  # u1's two interactions (days 0, 1) and u2's first (day 2) are before it
    tables = compute_features(tiny, as_of=cut)
    assert tables.info["data_end"] == cut
    assert tables.users.loc["u1", "days_since_last"] == pytest.approx(30.0)
    assert tables.items.loc["a", "item_age_days"] == pytest.approx(31.0)
    assert tables.items.loc["a", "pop_all"] == pytest.approx(2 / 3)  # a twice among the 3 interactions before
    assert tables.items.loc["a", "pop_30d"] == pytest.approx(1 / 2)  # day 0 is 31 days back, days 1 and 2 inside
    assert "c" not in tables.items.index  # first taken on day 60
