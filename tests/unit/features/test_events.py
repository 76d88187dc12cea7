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
    merged = with_feedback(tiny, events)
    added = merged.interactions.iloc[len(base) :]
    assert list(zip(added["user_id"], added["item_id"], strict=True)) == [("u1", "c"), ("new", "a")]
    pd.testing.assert_frame_equal(merged.interactions.iloc[: len(base)], base)
    assert merged.notes[-1].endswith("4 feedback events, 2 added to the interactions (2 duplicates)")


def test_bad_feedback_rows_stop_training_naming_the_log(tiny, tmp_path):
    events = _log(tmp_path, [{"user_id": "u1", "item_id": None, "timestamp": 1, "weight": 1.0}])
    with pytest.raises(DataError, match="feedback"):
        with_feedback(tiny, events)
