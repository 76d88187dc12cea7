"""The backtest's cuts, labels and choices, on hand-made data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import validate_interactions
from train.backtest import (
    TWO_STAGE_MODEL,
    BacktestParams,
    backtest_cuts,
    choose_cold_start,
    compare,
    option_name,
    paired_difference,
)
from train.ranker_training import RankerParams, fresh_items, taken_after, training_cuts

DAY = 86_400


def interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, days = zip(*rows, strict=True)
    return validate_interactions(
        pd.DataFrame({"user_id": users, "item_id": items, "timestamp": [d * DAY for d in days]})
    )


def test_cuts_spread_over_the_second_half_and_leave_a_full_horizon():
    data = interactions([("u", "a", 0), ("u", "b", 299)])  # spans days 0..299 (+1 s)
    cuts = backtest_cuts(data, BacktestParams(n_cuts=3, horizon_days=14))
    last = 299 * DAY + 1 - 14 * DAY
    assert cuts[-1] == last  # the last cut leaves exactly 14 days after it
    assert len(cuts) == 3 and cuts == sorted(cuts)
    assert cuts[0] >= (299 * DAY + 1) // 2  # the second half starts halfway through the span
    assert all((last - cut) % (7 * DAY) == 0 for cut in cuts)  # on the training cuts' weekly grid
    assert [(last - cut) // (7 * DAY) for cut in cuts] == [19, 10, 0]


def test_every_week_of_the_second_half_is_a_cut_when_there_are_few_enough():
    data = interactions([("u", "a", 0), ("u", "b", 299)])
    cuts = backtest_cuts(data, BacktestParams(n_cuts=100, horizon_days=14))
    assert len(cuts) == 20 and set(np.diff(cuts)) == {7 * DAY}
    assert cuts[0] >= (299 * DAY + 1) // 2 > cuts[0] - 7 * DAY  # the first week of the second half


def test_one_cut_is_the_latest_possible():
    data = interactions([("u", "a", 0), ("u", "b", 299)])
    assert backtest_cuts(data, BacktestParams(n_cuts=1, horizon_days=14)) == [299 * DAY + 1 - 14 * DAY]


def test_too_short_a_span_for_the_horizon_is_a_clear_error():
    with pytest.raises(ValueError, match="too short for a 14-day horizon"):
        backtest_cuts(interactions([("u", "a", 0), ("u", "b", 20)]), BacktestParams(horizon_days=14))


def test_training_labels_never_reach_the_cut():
    params = RankerParams(label_days=14, train_cuts=3, cut_step_days=7)
    until = 100 * DAY
    cuts = training_cuts(until, params)
    assert cuts == [72 * DAY, 79 * DAY, 86 * DAY]  # oldest first
    assert max(cuts) + params.label_days * DAY == until


def test_fresh_items_are_new_to_the_user_and_inside_the_window():
    data = interactions(
        [
            ("u", "a", 1),  # before the window
            ("u", "a", 11),  # a repeat inside it: not new
            ("u", "b", 10),  # new, at the window's first second
            ("u", "c", 20),  # at the window's end: outside
            ("v", "a", 15),  # a user with no history: every item is new
        ]
    )
    assert fresh_items(data, 10 * DAY, 20 * DAY) == {"u": {"b"}, "v": {"a"}}
    assert fresh_items(data, 10 * DAY, None) == {"u": {"b", "c"}, "v": {"a"}}
    assert fresh_items(data, 30 * DAY, None) == {}  # nothing in the window


def test_fresh_items_match_a_plain_reading_on_random_data():
    """Users in id order, each with the items of the window they had no earlier row of."""
    rng = np.random.default_rng(7)
    rows = [(f"u{rng.integers(40)}", f"i{rng.integers(30)}", int(rng.integers(100))) for _ in range(2_000)]
    data = interactions(rows)
    for start, end in ((50, 60), (0, 10), (90, None), (99, 100)):
        expected: dict[str, set[str]] = {}
        for user, item, day in rows:
            inside = day >= start and (end is None or day < end)
            if inside and not any(u == user and i == item and d < start for u, i, d in rows):
                expected.setdefault(user, set()).add(item)
        found = fresh_items(data, start * DAY, end * DAY if end is not None else None)
        assert found == expected
        assert list(found) == sorted(expected)


def test_taken_after_is_new_items_of_the_later_rows():
    data = interactions([("u", "a", 2), ("w", "a", 0), ("u", "a", 5), ("u", "c", 3), ("v", "b", 1), ("v", "b", 9)])
    before, after = np.array([2, 4]), np.array([0, 3, 1, 5])  # times play no part, nor do other rows
    assert taken_after(data, before, after) == {"u": {"c"}, "w": {"a"}}
    assert list(taken_after(data, before, after)) == ["u", "w"]
    assert taken_after(data, np.array([], int), np.array([2])) == {"u": {"a"}}


def test_cold_start_choice_is_the_best_mean_over_every_cut_and_horizon():
    def cold(scores: dict[tuple, float], horizon: str = "14 days") -> dict:
        options = {
            option_name(days, weight): {"ndcg@10": 0.0}
            for days in (None, 1, 7, 30, 60)
            for weight in (0.0, 0.3, 1.0, 3.0)
        }
        options.update({option_name(*key): {"ndcg@10": value} for key, value in scores.items()})
        return {"segment": "cold", "horizon": horizon, "cold_start_options": options}

    rows = [
        cold({(30, 0.0): 0.5, (60, 1.0): 0.6}),
        cold({(30, 0.0): 0.5, (60, 1.0): 0.3}),  # 60 days wins one cut, loses on the mean
        cold({(60, 1.0): 0.9}, horizon="all after the cut"),  # another horizon does not count
        {"segment": "warm", "horizon": "14 days"},
    ]
    assert choose_cold_start(rows, "14 days") == (30, 0.0)
    assert choose_cold_start([], "14 days") == (30, 0.0)  # nothing to learn from: the defaults
    # A clear winner replaces the defaults; one within 2% of them does not.
    assert choose_cold_start([cold({(30, 0.0): 0.5, (7, 1.0): 0.52})], "14 days") == (7, 1.0)
    assert choose_cold_start([cold({(30, 0.0): 0.5, (7, 1.0): 0.509})], "14 days") == (30, 0.0)


def test_paired_difference_is_the_mean_gap_with_an_interval_that_holds_it():
    same = np.array([0.0, 0.2, 0.5, 1.0])
    assert paired_difference(same, same) == (0.0, 0.0, 0.0)
    ahead = np.array([0.3, 0.0, 0.6, 0.1])
    gap, low, high = paired_difference(ahead, np.array([0.1, 0.0, 0.2, 0.1]))
    assert gap == pytest.approx(0.15) and 0 <= low <= gap <= high
    with pytest.raises(ValueError, match="same users"):
        paired_difference(np.array([0.5]), np.array([0.5, 0.1]))


def _cut(label: str, ours: list[float], theirs: list[float], week: list[float] | None = None) -> dict:
    scores = {TWO_STAGE_MODEL: ours, "popular (all time)": theirs, "popular (last 7 days)": week or [0.0] * len(ours)}
    return {
        "cut": label,
        "horizon": "14 days",
        "segment": "warm",
        "models": {name: {"ndcg@10": float(np.mean(v))} for name, v in scores.items()},
        "per_user": scores,
    }


def test_a_cut_counts_as_lost_clearly_only_when_its_paired_interval_is_below_zero():
    rows = [
        _cut("behind every user", [0.0] * 30, [0.5] * 30),
        _cut("behind by one user", [0.0] + [0.5] * 29, [0.5] * 30),
        _cut("a tie, users split", [0.0, 1.0] * 15, [1.0, 0.0] * 15),
        _cut("ahead", [0.6] * 30, [0.5] * 30),
    ]
    found = compare(rows)["14 days"]["warm"]
    assert (found["won"], found["at_least_baseline"], found["lost_clearly"], found["cuts"]) == (1, 1, 1, 4)


def test_a_cut_is_lost_clearly_to_its_own_best_baseline_not_only_to_the_best_list_on_the_mean():
    rows = [
        _cut("the all-time list wins on the mean", [0.5] * 30, [0.4] * 30),
        _cut("last week's list wins here, clearly", [0.3] * 30, [0.3] * 30, week=[0.6] * 30),
    ]
    found = compare(rows)["14 days"]["warm"]
    assert found["baseline"] == "popular (all time)"
    assert (found["at_least_baseline"], found["won"], found["lost_clearly"]) == (1, 1, 1)
