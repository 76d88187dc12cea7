"""The event log's schema and reader: impressions (what was shown) and feedback (what users did).

The service writes it (:mod:`serving.events`); training folds feedback into
its interactions (``python -m train --events``) and the online report joins
the two (``python -m train.online_report``). Layout, under a root that is a
local path or any pyarrow filesystem URI (``s3://bucket/prefix``):

    <root>/<kind>/date=<YYYY-MM-DD>/<worker>-<sequence>.parquet

``kind`` is ``impressions`` or ``feedback``; every file has :data:`SCHEMA`,
one row per shown item or per feedback event. Files whose name starts with
``_`` are being written and are skipped.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from features.schema import FIRST_YEAR, Columns, Dataset, date_range, validate_interactions

IMPRESSIONS, FEEDBACK = "impressions", "feedback"
SCHEMA = pa.schema(
    [
        ("logged_at", pa.float64()),  # unix seconds when the server logged the row
        ("request_id", pa.string()),  # the response's request_id (feedback: when the client sent it)
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),  # impressions: the item's rank, its place in the whole ranking; feedback: null
        ("score", pa.float64()),  # impressions: the served score; feedback: null
        ("strategy", pa.string()),  # impressions: two_stage or popular; feedback: null
        ("model", pa.string()),  # impressions: the ranker tag that answered; feedback: null
        ("timestamp", pa.int64()),  # feedback: when the user took the item (unix seconds); impressions: null
        ("weight", pa.float64()),  # feedback: as in training data; impressions: null
        ("type", pa.string()),  # feedback: the client's event type (click, watch, rating, ...); impressions: null
        # impressions in an online experiment (serving/experiments.py): its name, the arm, the arm's share of
        # users, and whether the request forced the arm; null otherwise (and in logs written before them)
        ("experiment", pa.string()),
        ("arm", pa.string()),
        ("arm_share", pa.float64()),
        ("arm_forced", pa.bool_()),
        ("team", pa.string()),  # impressions in an interleaving arm: which model placed the item (a or b)
        ("shadow", pa.bool_()),  # impressions of a shadow list: scored for the shown list's request_id, never shown
        ("session_id", pa.string()),  # impressions in an experiment: the visitor's session that chose the arm, if any
    ]
)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and root path for a local path or a URI (``s3://bucket/prefix``, ``file:///...``)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def read_events(uri: str, kind: str) -> pa.Table:
    """Every logged row of one kind under a log root (an empty table when there is none)."""
    fs, root = filesystem(uri)
    path = f"{root}/{kind}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return SCHEMA.empty_table()
    return ds.dataset(path, filesystem=fs, format="parquet", schema=SCHEMA).to_table()


def with_feedback(dataset: Dataset, uri: str, allow_any_dates: bool = False) -> Dataset:
    """The dataset with the logged feedback added to its interactions, each (user, item, time) once.

    Duplicates come from client retries and from exports that already hold
    what was fed back; the data's own row wins. Events dated outside the rule
    training files follow (1990 to next year, unless ``allow_any_dates``) are
    dropped and counted in a note.
    """
    logged = read_events(uri, FEEDBACK).to_pandas()
    low, high = date_range()
    times = logged[Columns.timestamp]
    outside = ((times < low) | (times >= high)) & (not allow_any_dates)
    notes = []
    if outside.any():
        # The date rule of training files: far more often a unit mistake (or 0) than real activity; such an
        # event would stretch the data's span by decades and move every backtest cut.
        notes.append(
            f"{uri}: {int(outside.sum()):,} feedback events dropped: timestamps outside {FIRST_YEAR}-"
            f"{_year_of(high) - 1} (e.g. {int(times[outside].iloc[0])})"
        )
        logged = logged[~outside]
    feedback = validate_interactions(
        logged[[Columns.user, Columns.item, Columns.timestamp, Columns.weight]], f"{uri}/{FEEDBACK}"
    )
    combined = pd.concat([dataset.interactions, feedback], ignore_index=True)
    combined = combined.drop_duplicates([Columns.user, Columns.item, Columns.timestamp], keep="first")
    added = len(combined) - len(dataset.interactions)
    duplicates = len(feedback) - added
    note = f"{uri}: {len(feedback):,} feedback events, {added:,} added to the interactions ({duplicates:,} duplicates)"
    return replace(dataset, interactions=combined.reset_index(drop=True), notes=[*dataset.notes, *notes, note])


def _year_of(seconds: int) -> int:
    return datetime.fromtimestamp(seconds, UTC).year
