"""Metrics and the temporal split, on hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from train.evaluate import holdout_rows, ndcg_per_user, ranking_metrics, rows_of, temporal_split


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


def test_holdout_rows_part_the_training_part_again_as_temporal_split_would():
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "user_id": rng.choice(["a", "b", "9", "10", "é"], n),
            "item_id": [f"i{i}" for i in range(n)],
            "timestamp": rng.integers(0, 6, n),  # many ties: file order decides them
            "weight": np.float32(1),
        },
        index=rng.permutation(n) + 7,
    )
    rows = holdout_rows(frame, 0.3)
    train, test = temporal_split(frame, 0.3)
    before, after = temporal_split(train, 0.3)
    for part, positions in ((train, rows.train), (test, rows.test), (before, rows.before), (after, rows.after)):
        pd.testing.assert_frame_equal(part, rows_of(frame, positions))
    assert sorted(np.concatenate([rows.before, rows.after])) == sorted(rows.train)
    assert len(test) == sum(int(np.floor(c * 0.3)) for c in frame["user_id"].value_counts())
