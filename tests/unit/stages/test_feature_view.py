"""The feature view: rows for (user, candidate) pairs and the segment fallback, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from features.compute import compute_features
from stages.feature_view import FeatureView


def test_view_rows_match_tables(tiny):
    tables = compute_features(tiny)
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    names = view.available()
    users = view.user_rows(["u1", "u1", "nobody"])
    numeric, categorical = view.rows(
        names,
        users,
        np.array([1, 2, 0]),
        np.array([0.9, 0.5, 0.1], np.float32),
        np.array([1, 2, 1], np.float32),
    )
    col = {n: numeric[:, i] for i, n in enumerate(names.numeric)}
    assert col["pop_all"].tolist() == [2, 1, 2]
    assert col["aff_genres"][0] == pytest.approx((1.0 + 2 / 6) / 2)  # item b has two genres
    assert col["aff_genres_max"][1] == pytest.approx(2 / 6)
    assert col["genres=comedy"].tolist() == [1, 1, 0]
    assert col["diff_year"][1] == pytest.approx(2010 - (4 * 1990 + 2 * 2000) / 6, rel=1e-5)  # float32
    assert col["recent_sim_max"].tolist() == pytest.approx([1.0, 0.0, -1.0])  # unknown user: no history
    assert np.isnan(col["activity"][2]) and np.isnan(col["seg_job"][2])
    assert categorical[:, names.categorical.index("cat_job")].tolist() == ["x", "x", "<unknown>"]


def test_segment_fallback_uses_bucketed_numeric_attributes(tiny):
    view = FeatureView(compute_features(tiny), np.array(["a", "b", "c"], dtype=object))
    scores, used = view.segment_scores({"job": "y", "unknown_attribute": 1})
    assert used == ["job=y"]
    assert scores.tolist() == pytest.approx([1 / 9, 3 / 9, 5 / 9])
    assert view.segment_scores({"job": "never-seen"}) is None
