"""The online report on a known event log: which shown items count as taken, and the metrics."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.schema import DAY
from train.online_report import main, report

T0 = 1_700_000_000


def impressions() -> pd.DataFrame:
    rows = []
    for request_id, user, items, model in (
        ("r1", "u1", ["a", "b", "c"], "ranker:v1"),
        ("r2", "u2", ["a", "b", "c"], "ranker:v1"),
        ("r3", "u1", ["d", "e", "f"], "ranker:v2"),
    ):
        rows += [
            {
                "logged_at": float(T0),
                "request_id": request_id,
                "user_id": user,
                "item_id": item,
                "position": position,
                "score": 0.0,
                "strategy": "two_stage",
                "model": model,
            }
            for position, item in enumerate(items, start=1)
        ]
    return pd.DataFrame(rows)


def feedback(rows: list[tuple[str, str, int, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"user_id": u, "item_id": i, "timestamp": t, "request_id": r, "weight": 1.0} for u, i, t, r in rows],
        columns=["user_id", "item_id", "timestamp", "request_id", "weight"],
    )


def test_a_later_page_is_scored_as_the_list_the_user_saw():
    """Positions are places in the whole ranking: a page at offset 10 is logged 11-13, and taking its first item
    is that list's best outcome, as taking the first item of page one is."""
    paged = impressions()
    paged.loc[paged["request_id"] == "r3", "position"] += 10
    events = feedback([("u1", "d", T0 + 60, "r3"), ("u1", "e", T0 + 60, "r3")])
    both = report(impressions(), events).set_index("model").loc["ranker:v2", "ndcg"]
    assert report(paged, events).set_index("model").loc["ranker:v2", "ndcg"] == pytest.approx(both) == 1.0


def test_taken_items_are_joined_by_request_id_or_by_time_window():
    events = feedback(
        [
            ("u1", "b", T0 + 60, None),  # r1 and r3 are both u1's; only r1 showed b
            ("u2", "a", T0 + 8 * DAY, None),  # too late for the 7-day window
            ("u1", "f", T0 + 30 * DAY, "r3"),  # late, but names its list
            ("u1", "x", T0 + 60, None),  # never shown
        ]
    )
    table = report(impressions(), events).set_index("model")
    v1, v2 = table.loc["ranker:v1"], table.loc["ranker:v2"]
    assert (v1["lists"], v1["users"], v1["hit_rate"]) == (2, 2, 0.5)
    assert v1["ndcg"] == pytest.approx((1 / math.log2(3)) / 2)  # b at position 2 in r1; r2 nothing
    assert v1["taken_share"] == pytest.approx(1 / 6)
    assert (v2["hit_rate"], v2["ndcg"]) == (1.0, pytest.approx(1 / math.log2(4)))


def test_no_events_reports_so(tmp_path, capsys):
    main(["--events", str(tmp_path / "nothing-here")])
    assert "no impressions logged yet" in capsys.readouterr().out
