"""Logged feedback folded into training data: validated like any interactions, each event once."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.events import FEEDBACK, SCHEMA, with_feedback
from features.schema import DataError


def _log(root, rows: list[dict]) -> str:
    directory = root / FEEDBACK / "date=2026-11-29"
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), directory / "w-000000.parquet")
    return str(root)


def test_feedback_joins_the_interactions_once(tiny, tmp_path):
    base = tiny.interactions
    first = base.iloc[0]
    events = _log(
        tmp_path,
        [
            {"user_id": "u1", "item_id": "c", "timestamp": 70 * 86_400, "weight": 2.0},
            {"user_id": "u1", "item_id": "c", "timestamp": 70 * 86_400, "weight": 2.0},  # a client retry
            {"user_id": "new", "item_id": "a", "timestamp": 71 * 86_400, "weight": 1.0},
            # Already in the data: the data's row wins.
            {
                "user_id": first["user_id"],
                "item_id": first["item_id"],
                "timestamp": int(first["timestamp"]),
                "weight": 9.0,
            },
        ],
    )
    merged = with_feedback(tiny, events, allow_any_dates=True)  # the tiny data lives in 1970
    added = merged.interactions.iloc[len(base) :]
    assert list(zip(added["user_id"], added["item_id"], strict=True)) == [("u1", "c"), ("new", "a")]
    pd.testing.assert_frame_equal(merged.interactions.iloc[: len(base)], base)
    assert merged.notes[-1].endswith("4 feedback events, 2 added to the interactions (2 duplicates)")


def test_bad_feedback_rows_stop_training_naming_the_log(tiny, tmp_path):
    events = _log(tmp_path, [{"user_id": "u1", "item_id": None, "timestamp": 1, "weight": 1.0}])
    with pytest.raises(DataError, match="feedback"):
        with_feedback(tiny, events, allow_any_dates=True)


def test_feedback_dated_outside_the_training_date_rule_is_dropped_and_said(tiny, tmp_path):
    """0 stretched the retrained data back to 1970 (the backtest was skipped); 2099 made training exit 2."""
    base = tiny.interactions.assign(timestamp=tiny.interactions["timestamp"] + 1_700_000_000)
    recent = pd.Timestamp.now(tz="UTC").timestamp()
    events = _log(
        tmp_path,
        [
            {"user_id": "u1", "item_id": "c", "timestamp": 0, "weight": 1.0},
            {"user_id": "u1", "item_id": "a", "timestamp": 4_102_444_799, "weight": 1.0},
            {"user_id": "u2", "item_id": "a", "timestamp": int(recent), "weight": 1.0},
        ],
    )
    merged = with_feedback(type(tiny)(base, tiny.users, tiny.items), events)
    assert merged.interactions["timestamp"].min() == base["timestamp"].min()
    assert len(merged.interactions) == len(base) + 1
    assert any("2 feedback events dropped: timestamps outside 1990-" in note for note in merged.notes)
