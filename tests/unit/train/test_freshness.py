"""The freshness backtest: its item-to-item baseline on a matrix whose answer is known, and its paired intervals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from train.backtest import paired_ratio
from train.freshness import HINDSIGHT, ITEM_KNN, WITH, gains, hindsight_lists, item_knn_lists


def _candidates(rows: list[list[int]], n_items: int) -> SimpleNamespace:
    """What item_knn_lists reads of a candidate model: who took what, and the item ids."""
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    seen = sp.csr_matrix((np.ones(len(users)), (users, np.concatenate(rows))), shape=(len(rows), n_items))
    ids = np.array([f"i{j}" for j in range(n_items)], dtype=object)
    return SimpleNamespace(seen=seen, item_ids=ids, item_index={i: j for j, i in enumerate(ids)}, n_items=n_items)


def test_items_taken_with_the_recent_ones_come_first_and_the_recent_ones_never():
    # i0 and i1 always together; i2 with i3; i4 with everything once.
    candidates = _candidates([[0, 1], [0, 1], [0, 1, 4], [2, 3], [2, 3, 4]], 5)
    lists = item_knn_lists(candidates, {"a": ["i0"], "b": ["i2", "unknown"], "c": ["nope"]}, k=2)
    assert lists["a"] == ["i1", "i4"]
    assert lists["b"] == ["i3", "i4"]
    assert len(lists["c"]) == 2  # no usable seed: a list all the same, never an error


def test_paired_ratio_of_identical_models_is_one_with_no_spread():
    ndcg = np.array([0.0, 0.2, 0.5, 1.0])
    assert paired_ratio([(ndcg, ndcg), (ndcg[:2], ndcg[:2])]) == (1.0, 1.0, 1.0)


def test_paired_ratio_is_the_mean_over_cuts_and_its_interval_holds_it():
    # Cut 1: a doubles b for every user; cut 2: a equals b. Means over cuts: (0.4 + 0.3) / (0.2 + 0.3).
    cut1 = (np.array([0.2, 0.4, 0.6]), np.array([0.1, 0.2, 0.3]))
    cut2 = (np.array([0.0, 0.6]), np.array([0.0, 0.6]))
    ratio, low, high = paired_ratio([cut1, cut2])
    assert ratio == pytest.approx(0.7 / 0.5)
    assert low <= ratio <= high
    assert paired_ratio([cut1, cut2]) == (ratio, low, high)  # seeded: the same interval every run


def test_paired_ratio_resamples_within_cuts_not_across_them():
    # Every user of a cut scores the same, so any within-cut draw gives each cut's mean exactly:
    # (0.4 + 0.3) / (0.2 + 0.3) = 1.4 every time. Pooling users across cuts would spread it.
    cut1 = (np.full(3, 0.4), np.full(3, 0.2))
    cut2 = (np.full(7, 0.3), np.full(7, 0.3))
    assert paired_ratio([cut1, cut2]) == pytest.approx((1.4, 1.4, 1.4))


def test_paired_ratio_without_a_baseline_score_is_nan_and_bad_input_is_refused():
    assert all(np.isnan(paired_ratio([(np.array([0.5, 0.1]), np.zeros(2))])))
    with pytest.raises(ValueError, match="same users"):
        paired_ratio([(np.array([0.5]), np.array([0.5, 0.1]))])
    with pytest.raises(ValueError, match="same users"):
        paired_ratio([])


def test_gains_compare_with_the_best_popularity_list_of_the_segment():
    row = {
        "segment": "unknown",
        "ndcg_per_user": {
            WITH: [0.4, 0.6],
            ITEM_KNN: [0.2, 0.4],
            "popular (all time)": [0.1, 0.1],
            "popular (x)": [0.5, 0.5],
        },
    }
    means = {"unknown": {"popular (all time)": 0.1, "popular (x)": 0.5, ITEM_KNN: 0.3, WITH: 0.5}}
    found = {g["baseline"]: g["ratio"] for g in gains([row], means)}
    assert found == pytest.approx({ITEM_KNN: 0.5 / 0.3, "popular (x)": 1.0})  # warm comparisons: no warm rows
    # With the hindsight list in the rows, its ratio over the best popularity list is reported too.
    row["ndcg_per_user"][HINDSIGHT] = [0.6, 0.9]
    means["unknown"][HINDSIGHT] = 0.75
    ceiling = [g for g in gains([row], means) if g["model"] == HINDSIGHT]
    assert [(g["baseline"], g["ratio"]) for g in ceiling] == [("popular (x)", pytest.approx(1.5))]


def test_hindsight_list_orders_items_by_their_share_of_each_users_ideal_dcg():
    # a took one item (IDCG 1): i9 is worth 1 to a. b took three (IDCG 1 + 1/log2 3 + 1/2 = 2.13):
    # each of i1, i2, i3 is worth 0.47 to b. c took i1 and i2 (IDCG 1.63): 0.61 each.
    relevant = {"a": {"i9"}, "b": {"i1", "i2", "i3"}, "c": {"i1", "i2"}}
    lists = hindsight_lists(relevant, {"c": ["i1"]}, k=3)
    assert lists["a"] == ["i1", "i2", "i9"]  # 1.08, 1.08 (ties by id), then 1.0: a's one item is not first
    assert lists["b"] == ["i1", "i2", "i9"]
    assert lists["c"] == ["i2", "i9", "i3"]  # its own recent item left out, the rest move up


def test_paired_ratio_interval_is_narrow_when_the_gain_is_the_same_for_every_user():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 1.0, 200)
    ratio, low, high = paired_ratio([(base * 1.2, base)])
    assert ratio == pytest.approx(1.2)
    assert (low, high) == pytest.approx((1.2, 1.2))
