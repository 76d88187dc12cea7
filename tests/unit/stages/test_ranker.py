"""The ranker's per-row path contributions on a small model trained here."""

from __future__ import annotations

import numpy as np
from catboost import CatBoost

from stages.feature_view import FeatureNames
from stages.ranker import Ranker


def test_path_contributions_add_up_to_the_score():
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(200, 3)).astype(np.float32)
    categorical = rng.choice(["a", "b", "c"], size=(200, 1)).astype(object)
    target = numeric[:, 0] * 2 - numeric[:, 1] + (categorical[:, 0] == "a")
    names = FeatureNames(("x0", "x1", "x2"), ("colour",))
    model = CatBoost({"iterations": 30, "depth": 3, "verbose": False, "random_seed": 0, "thread_count": 1})
    model.fit(Ranker.data(names, numeric, categorical), target)
    ranker = Ranker(model, names)
    contributions = ranker.contributions(numeric[:10], categorical[:10])
    expected = ranker._paths.means[:, 0, 0].sum() + model.get_scale_and_bias()[1]
    scores = ranker.score(numeric[:10], categorical[:10])
    np.testing.assert_allclose(contributions.sum(axis=1) + expected, scores, rtol=1e-4, atol=1e-4)
    # x0 drives the target most: it carries the largest contributions on average.
    assert np.abs(contributions).mean(axis=0).argmax() == 0
