"""Metrics and the temporal split, on hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from train.evaluate import holdout_rows, ndcg_per_user, ranking_metrics, rows_of


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


def test_the_per_user_split_holds_out_each_users_latest():
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 5 + ["v"],
            "item_id": [*"edcba", "z"],
            "timestamp": [5, 4, 3, 2, 1, 9],
            "weight": [1.0] * 6,
        }
    )
    rows = holdout_rows(frame, holdout=0.4)
    assert rows_of(frame, rows.test)["item_id"].tolist() == ["d", "e"]  # the two latest of u's five
    assert sorted(rows_of(frame, rows.train)["item_id"]) == ["a", "b", "c", "z"]  # v keeps its only interaction
    assert rows_of(frame, rows.after)["item_id"].tolist() == ["c"]  # the latest of u's three left (floor(1.2))
    assert rows_of(frame, rows.before)["item_id"].tolist() == ["a", "b", "z"]  # in time order


def test_the_per_user_split_parts_each_users_rows_by_time_then_file_order():
    """Against a plain reading, user by user: many ties in time (file order decides), odd ids, any index."""
    rng = np.random.default_rng(3)
    n, holdout = 400, 0.3
    frame = pd.DataFrame(
        {
            "user_id": rng.choice(["a", "b", "9", "10", "é"], n),
            "item_id": [f"i{i}" for i in range(n)],
            "timestamp": rng.integers(0, 6, n),
            "weight": np.float32(1),
        },
        index=rng.permutation(n) + 7,
    )
    expected: dict[str, list[int]] = {"train": [], "test": [], "before": [], "after": []}
    for user in frame["user_id"].unique():
        mine = sorted(np.flatnonzero(frame["user_id"].to_numpy() == user), key=lambda r: (frame["timestamp"].iat[r], r))
        n_train = len(mine) - int(np.floor(len(mine) * holdout))
        n_before = n_train - int(np.floor(n_train * holdout))
        for part, rows in (("train", mine[:n_train]), ("test", mine[n_train:])):
            expected[part] += rows
        for part, rows in (("before", mine[:n_before]), ("after", mine[n_before:n_train])):
            expected[part] += rows
    rows = holdout_rows(frame, holdout)
    by_time = np.lexsort((np.arange(n), frame["timestamp"].to_numpy()))
    for part, positions in rows._asdict().items():
        assert sorted(positions.tolist()) == sorted(expected[part])  # the rows of each part
        assert positions.tolist() == [r for r in by_time.tolist() if r in set(expected[part])]  # in time order
    pd.testing.assert_frame_equal(rows_of(frame, rows.test), frame.iloc[rows.test].reset_index(drop=True))
