"""benchmarks.experiment_loop: the truth is the planted clusters, and its detectors read served lists right.

The loop itself (a real server, trained models) is a benchmark run by hand;
these check the parts that turn its logs into findings, on hand-built lists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.experiment_loop import (
    IN_CLUSTER,
    OUT_OF_CLUSTER,
    K,
    Truth,
    data_config,
    interleaving_detector,
    list_chances,
    split_detector,
    true_hit_rates,
)
from features import synthetic


def test_the_chance_of_a_take_is_the_planted_cluster_times_propensity_and_position():
    config = data_config(600)
    truth = Truth(config, shape=0.0, seed=0)
    users_c, items_c = synthetic.clusters(config)
    assert users_c[3] == synthetic.user_cluster("u3", config) and items_c[5] == synthetic.item_cluster("i5", config)
    same = next(i for i in range(config.n_items) if items_c[i] == users_c[3])
    other = next(i for i in range(config.n_items) if items_c[i] != users_c[3])
    chance = truth.chance(np.array(["u3", "u3", "u3"]), np.array([f"i{same}", f"i{other}", f"i{same}"]),
                          np.array([1, 1, 3]))  # fmt: skip
    assert chance.tolist() == pytest.approx([IN_CLUSTER, OUT_OF_CLUSTER, IN_CLUSTER / 2])


def shown(arm: str, chances: list[list[float]], teams: list[list[str]] | None = None) -> pd.DataFrame:
    rows = []
    for n, row in enumerate(chances):
        for position, chance in enumerate(row, start=1):
            team = teams[n][position - 1] if teams else None
            rows.append({"arm": arm, "request_id": f"{arm}{n}", "user_id": f"u{n}", "position": position,
                         "chance": chance, "team": team})  # fmt: skip
    return pd.DataFrame(rows)


def test_an_arms_true_hit_rate_is_the_chance_that_a_list_has_a_take():
    lists = pd.concat([shown("a", [[0.5, 0.5], [0.0, 0.0]]), shown("b", [[1.0, 0.0]])])
    assert true_hit_rates(lists).to_dict() == {"a": pytest.approx((0.75 + 0.0) / 2), "b": 1.0}


def test_the_detectors_find_a_true_difference_and_rarely_one_that_is_not_there():
    rng = np.random.default_rng(0)
    good, _ = list_chances(shown("good", [[0.2] * K] * 50), "good")
    poor, _ = list_chances(shown("poor", [[0.05] * K] * 50), "poor")
    assert good.shape == (50, K)
    assert split_detector(good, poor, 1.0, 200)(2000, rng).mean() == 0.0  # poor above good: never
    assert split_detector(good, poor, -1.0, 200)(2000, rng).all()
    assert split_detector(good, good, 1.0, 200)(2000, rng).mean() <= 0.06  # one-sided 2.5% expected
    # Interleaved lists: team b places the odd positions with items twice as likely to be taken.
    teams = [["a", "b"] * (K // 2)] * 50
    chances = [[0.1, 0.2] * (K // 2)] * 50
    mixed, team_b = list_chances(shown("mixed", chances, teams), "mixed")
    assert team_b[0].tolist() == [False, True] * (K // 2)
    assert interleaving_detector(mixed, team_b, 1.0, 100)(2000, rng).all()
    assert not interleaving_detector(mixed, team_b, -1.0, 100)(2000, rng).any()
