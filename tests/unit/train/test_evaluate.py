"""Metrics and the temporal split, on hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from train.evaluate import ndcg_per_user, ranking_metrics, temporal_split


def test_metrics_known_answer():
    # user 0: hits at ranks 1 and 3 of 3 relevant; user 1: no hit.
    recommended = {0: ["a", "x", "b", "y"], 1: ["q"]}
    relevant = {0: {"a", "b", "c"}, 1: {"z"}}
    result = ranking_metrics(recommended, relevant, n_catalogue=10, k=4)
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert result["ndcg@4"] == pytest.approx(dcg / idcg / 2)
    assert result["recall@4"] == pytest.approx((2 / 3) / 2)
    assert result["map@4"] == pytest.approx(((1 + 2 / 3) / 3) / 2)
    assert result["hitrate@4"] == pytest.approx(0.5)
    assert result["coverage"] == pytest.approx(5 / 10)
    # Per user, in the order of ``relevant``; a user with no list scores 0.
    per_user = ndcg_per_user(recommended, {1: {"z"}, 0: {"a", "b", "c"}, 3: {"a"}}, k=4)
    assert per_user == pytest.approx([0.0, dcg / idcg, 0.0])


def test_perfect_list_scores_one():
    result = ranking_metrics({0: ["a", "b"]}, {0: {"a", "b"}}, n_catalogue=2, k=10)
    assert result["ndcg@10"] == 1.0 and result["map@10"] == 1.0 and result["recall@10"] == 1.0


def test_temporal_split_holds_out_each_users_latest():
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 5 + ["v"],
            "item_id": [*"edcba", "z"],
            "timestamp": [5, 4, 3, 2, 1, 9],
            "weight": [1.0] * 6,
        }
    )
    train, test = temporal_split(frame, holdout=0.4)
    assert test["item_id"].tolist() == ["d", "e"]  # the two latest of u's five
    assert sorted(train["item_id"]) == ["a", "b", "c", "z"]  # v keeps its only interaction
