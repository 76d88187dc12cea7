"""Feature computation on the tiny dataset, compared with hand-computed answers."""

from __future__ import annotations

import pandas as pd
import pytest

from features.compute import compute_features
from features.schema import Dataset


def test_item_and_user_aggregates(tiny):
    tables = compute_features(tiny)
    items = tables.items
    # Shares of each window's interactions: 5 in all, 2 in the last 30 days, 1 in the last day.
    assert items.loc[["a", "b", "c"], "pop_all"].tolist() == pytest.approx([0.4, 0.4, 0.2])
    assert items.loc[["a", "b", "c"], "pop_30d"].tolist() == [0, 0.5, 0.5]  # window: days 30..60
    assert items.loc[["a", "b", "c"], "pop_1d"].tolist() == [0, 0, 1]  # from just after day 60: b (day 59) is out
    # this week against the month's weekly average, floored at one a week: 1 / max(1 * 7/30, 1)
    assert items.loc["b", "pop_trend"] == pytest.approx(1.0)
    assert items.loc["a", "item_days_since_last"] == pytest.approx(58.0)
    assert items.loc["a", "mean_weight"] == pytest.approx(2.5)
    assert items.loc["a", "item_age_days"] == pytest.approx(60.0)
    users = tables.users
    assert users.loc["u2", "activity"] == 3
    assert users.loc["u2", "recent_items"] == ("c", "b", "a")  # latest first
    assert users.loc["u1", "days_since_last"] == pytest.approx(59.0)
    assert users.loc[["u1", "u2"], "activity_30d"].tolist() == [0, 2]
    assert users.loc["u2", "recent_days_ago"] == pytest.approx((0.0, 1.0, 58.0), abs=1e-4)  # from just after day 60
    # u1's weighted mean release year: (4*1990 + 2*2000) / 6
    assert users.loc["u1", "taste_year"] == pytest.approx((4 * 1990 + 2 * 2000) / 6)


def test_affinity_and_segment_shares(tiny):
    tables = compute_features(tiny)
    share = tables.affinity.set_index(["user_id", "attribute", "value"])["share"]
    assert share[("u1", "genres", "drama")] == pytest.approx(1.0)  # a and b are both drama
    assert share[("u1", "genres", "comedy")] == pytest.approx(2 / 6)
    assert share[("u2", "genres", "comedy")] == pytest.approx(8 / 9)
    seg = tables.segments.set_index(["attribute", "value", "item_id"])["share"]
    assert seg[("job", "y", "c")] == pytest.approx(5 / 9)
    assert ("job", "x", "c") not in seg.index


def test_a_value_an_item_lists_twice_counts_once(tiny):
    """A share is of the user's weight, at most 1, as serving computes it: a repeated value is still one value."""
    repeated = tiny.items.assign(genres=[("drama", "drama"), ("drama", "comedy", "comedy"), ("comedy",)])
    tables = compute_features(Dataset(tiny.interactions, tiny.users, repeated))
    pd.testing.assert_frame_equal(tables.affinity, compute_features(tiny).affinity)
    assert tables.affinity["share"].max() <= 1.0
