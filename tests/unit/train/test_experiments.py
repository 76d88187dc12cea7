"""The experiment report on event logs with a known truth: users per arm, the lift and its interval, the checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.events import FEEDBACK, IMPRESSIONS, SCHEMA
from serving.events import EventLog
from train.experiments import (
    difference,
    experiment_report,
    interleaving_report,
    main,
    sample_ratio_p,
    shadow_report,
)

T0 = 1_700_000_000


def logged(users: dict[str, int], take: dict[str, float], seed: int = 0, forced: int = 0):
    """One list of 3 items per user and arm; a user of arm A takes the top item with probability ``take[A]``."""
    rng = np.random.default_rng(seed)
    shown, taken = [], []
    for arm, count in users.items():
        for n in range(count + forced):
            user, request = f"{arm}-{n}", f"{arm}-r{n}"
            is_forced = n >= count
            shown += [
                {
                    "logged_at": float(T0),
                    "request_id": request,
                    "user_id": user,
                    "item_id": item,
                    "position": p,
                    "score": 0.0,
                    "strategy": "two_stage",
                    "model": f"ranker:{arm}",
                    "experiment": "exp",
                    "arm": arm,
                    "arm_share": 1 / len(users),
                    "arm_forced": is_forced,
                }
                for p, item in enumerate(["a", "b", "c"], start=1)
            ]
            if rng.random() < take[arm]:
                taken.append({"request_id": request, "user_id": user, "item_id": "a", "timestamp": T0 + 60})
    feedback = pd.DataFrame(taken, columns=["request_id", "user_id", "item_id", "timestamp"])
    return pd.DataFrame(shown), feedback


def test_a_true_lift_is_found_inside_its_interval_and_an_equal_arm_is_not():
    impressions, feedback = logged({"control": 4000, "better": 4000, "same": 4000}, {"control": 0.2, "better": 0.25,
                                   "same": 0.2})  # fmt: skip
    arms, checks = experiment_report(impressions, feedback)
    by_arm = arms.set_index("arm")
    assert by_arm.loc["control", "hit_rate_diff"] == 0.0
    better = by_arm.loc["better"]
    assert better["hit_rate_low"] > 0 and better["hit_rate_low"] < 0.05 < better["hit_rate_high"]
    same = by_arm.loc["same"]
    assert same["hit_rate_low"] < 0 < same["hit_rate_high"]
    assert by_arm["users"].to_dict() == {"better": 4000, "control": 4000, "same": 4000}
    # One item taken at position 1 of a list: NDCG is the hit rate here.
    assert better["ndcg"] == pytest.approx(better["hit_rate"])
    (check,) = checks.to_dict(orient="records")
    assert check["control"] == "control" and not check["sample_ratio_mismatch"] and check["users"] == 12_000


def test_forced_answers_are_counted_apart_and_left_out_of_the_arms():
    impressions, feedback = logged({"control": 100, "other": 100}, {"control": 0.0, "other": 1.0}, forced=7)
    arms, checks = experiment_report(impressions, feedback)
    assert arms.set_index("arm")["users"].to_dict() == {"control": 100, "other": 100}
    assert checks["forced_lists"].tolist() == [14]
    assert arms.set_index("arm")["hit_rate"].to_dict() == {"control": 0.0, "other": 1.0}


def test_a_sample_ratio_mismatch_is_flagged_and_a_fair_split_is_not():
    assert sample_ratio_p(pd.Series({"a": 5_600, "b": 4_400}), pd.Series({"a": 0.5, "b": 0.5})) < 1e-9
    assert sample_ratio_p(pd.Series({"a": 5_030, "b": 4_970}), pd.Series({"a": 0.5, "b": 0.5})) > 0.5
    # Shares other than halves: 1:3 expected and found.
    assert sample_ratio_p(pd.Series({"a": 2_510, "b": 7_490}), pd.Series({"a": 0.25, "b": 0.75})) > 0.5
    impressions, feedback = logged({"control": 300, "other": 200}, {"control": 0.1, "other": 0.1})
    _, checks = experiment_report(impressions, feedback)
    assert bool(checks["sample_ratio_mismatch"].iloc[0])


def test_visitors_without_an_account_count_once_per_session():
    """Anonymous lists share a user_id: the unit is the session that chose the arm, as the service assigned it."""
    impressions, feedback = logged({"control": 60, "other": 40}, {"control": 0.5, "other": 0.5})
    anonymous = impressions.assign(session_id=impressions["user_id"], user_id="guest")
    arms, checks = experiment_report(anonymous, feedback.assign(user_id="guest"))
    assert arms.set_index("arm")["users"].to_dict() == {"control": 60, "other": 40}
    assert checks["users"].tolist() == [100]


def test_a_session_and_a_user_of_the_same_id_are_two_units_and_a_session_is_one_over_its_lists():
    """Units as the service assigned them: two lists of one session are one unit; session "7" is not user "7"."""
    rows = [  # (request, user, session, arm)
        ("r1", "guest", "7", "control"), ("r2", "guest", "7", "control"),  # one visit, two lists
        ("r3", "7", None, "control"),  # a signed-in user whose id is that session's
        ("r4", "guest", "8", "other"), ("r5", "9", None, "other"),
    ]  # fmt: skip
    shown = [{"logged_at": float(T0), "request_id": r, "user_id": u, "session_id": s, "item_id": "a", "position": 1,
              "score": 0.0, "strategy": "two_stage", "model": "m", "experiment": "exp", "arm": arm, "arm_share": 0.5,
              "arm_forced": False} for r, u, s, arm in rows]  # fmt: skip
    # Taken from r1 only, named by request_id; and "a" taken by "guest" with no request_id: it names no visit.
    taken = [{"request_id": "r1", "user_id": "guest", "item_id": "a", "timestamp": T0 + 60},
             {"request_id": None, "user_id": "guest", "item_id": "a", "timestamp": T0 + 120}]  # fmt: skip
    impressions, feedback = pd.DataFrame(shown), pd.DataFrame(taken)
    arms, checks = experiment_report(impressions, feedback)
    by_arm = arms.set_index("arm")
    assert by_arm["users"].to_dict() == {"control": 2, "other": 2} and by_arm["lists"].to_dict() == {
        "control": 3,
        "other": 2,
    }
    # control: session 7 took in one of two lists (0.5), user 7 took nothing (0.0); the visitor of session 8
    # is not credited with the anonymous take.
    assert by_arm.loc["control", "hit_rate"] == pytest.approx(0.25) and by_arm.loc["other", "hit_rate"] == 0.0
    assert checks["users"].tolist() == [4]


def test_the_interval_is_the_normal_one_over_users():
    treated, control = pd.Series([1.0, 0.0, 1.0, 1.0]), pd.Series([0.0, 0.0, 1.0, 0.0])
    diff, low, high = difference(treated, control)
    spread = np.sqrt(treated.var(ddof=1) / 4 + control.var(ddof=1) / 4)
    assert (
        diff == 0.5 and low == pytest.approx(0.5 - 1.959964 * spread) and high == pytest.approx(0.5 + 1.959964 * spread)
    )


def test_logs_without_experiments_give_empty_tables_and_the_cli_reads_a_real_log(tmp_path, capsys):
    impressions, feedback = logged({"control": 50, "other": 50}, {"control": 0.5, "other": 0.5})
    arms, checks = experiment_report(impressions.assign(experiment=None), feedback)
    assert arms.empty and checks.empty
    log = EventLog(str(tmp_path), max_rows=10**6, max_seconds=3600)
    log.append(IMPRESSIONS, impressions.to_dict(orient="records"))
    log.append(FEEDBACK, feedback.assign(weight=1.0, type="click").to_dict(orient="records"))
    log.close()
    main(["--events", str(tmp_path), "--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "arms.png")])
    out = capsys.readouterr().out
    assert "| exp | control |" in out and "| exp | other |" in out and "sample_ratio_p" in out
    assert (tmp_path / "arms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"experiment", "arm", "arm_share", "arm_forced"} <= set(SCHEMA.names)


def test_interleaving_credits_the_model_that_placed_each_taken_item():
    rng = np.random.default_rng(3)
    shown, taken = [], []
    for n in range(2000):
        request, user = f"r{n}", f"u{n}"
        teams = ["a", "b", "a", "b"] if n % 2 else ["b", "a", "b", "a"]
        shown += [
            {"logged_at": float(T0), "request_id": request, "user_id": user, "item_id": f"i{p}", "position": p,
             "score": 0.0, "strategy": "two_stage", "model": "ranker:a", "experiment": "exp", "arm": "both",
             "arm_share": 1.0, "arm_forced": False, "team": team}
            for p, team in enumerate(teams, start=1)
        ]  # fmt: skip
        # Users take one item of b's with probability 0.3, one of a's with 0.2: b wins more of the decided lists.
        for team, chance in (("b", 0.3), ("a", 0.2)):
            if rng.random() < chance:
                item = f"i{teams.index(team) + 1}"
                taken.append({"request_id": request, "user_id": user, "item_id": item, "timestamp": T0 + 60})
    table = interleaving_report(pd.DataFrame(shown), pd.DataFrame(taken))
    (row,) = table.to_dict(orient="records")
    assert row["lists"] == 2000 and row["a_wins"] + row["b_wins"] + row["ties"] == 2000
    # P(b wins) = 0.3 x 0.8 = 0.24, P(a wins) = 0.2 x 0.7 = 0.14: b's share of decided lists is 0.632.
    assert row["b_low"] < 0.632 < row["b_high"] and row["b_low"] > 0.5
    assert interleaving_report(pd.DataFrame(shown).assign(team=None), pd.DataFrame(taken)).empty


def test_a_shadow_is_compared_with_the_list_shown_for_the_same_request():
    def rows(request: str, items: list[str], shadow: bool) -> list[dict]:
        return [
            {"logged_at": float(T0), "request_id": request, "user_id": "u", "item_id": item, "position": p,
             "score": 0.0, "strategy": "two_stage", "model": "m", "experiment": "exp",
             "arm": "new" if shadow else "control", "arm_share": 0.0 if shadow else 1.0, "arm_forced": False,
             "shadow": shadow}
            for p, item in enumerate(items, start=1)
        ]  # fmt: skip

    shown = rows("r1", ["a", "b", "c", "d"], False) + rows("r2", ["a", "b", "c", "d"], False)
    shadow = rows("r1", ["b", "a", "x", "y"], True) + rows("r2", ["a", "b", "c", "d"], True)
    taken = pd.DataFrame([{"request_id": "r1", "user_id": "u", "item_id": "c", "timestamp": T0 + 1}])
    (row,) = shadow_report(pd.DataFrame(shown + shadow), taken).to_dict(orient="records")
    assert row["shadow"] == "new" and row["lists"] == 2
    assert row["overlap"] == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert row["rank_correlation"] == pytest.approx((-1.0 + 1.0) / 2)  # r1 swaps a and b; r2 agrees
    assert row["shown_hit_rate"] == 0.5 and row["shadow_hit_rate"] == 0.0  # c was shown in r1, not in the shadow
    # Shadow rows are never counted as shown lists.
    arms, _ = experiment_report(pd.DataFrame(shown + shadow), taken)
    assert arms["arm"].tolist() == ["control"] and arms["lists"].tolist() == [2]
