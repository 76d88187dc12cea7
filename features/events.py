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

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from features.schema import Columns, Dataset, validate_interactions

IMPRESSIONS, FEEDBACK = "impressions", "feedback"
SCHEMA = pa.schema(
    [
        ("logged_at", pa.float64()),  # unix seconds when the server logged the row
        ("request_id", pa.string()),  # the response's request_id (feedback: when the client sent it)
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),  # impressions: 1-based rank in the list; feedback: null
        ("score", pa.float64()),  # impressions: the served score; feedback: null
        ("strategy", pa.string()),  # impressions: two_stage or popular; feedback: null
        ("model", pa.string()),  # impressions: the ranker tag that answered; feedback: null
        ("timestamp", pa.int64()),  # feedback: when the user took the item (unix seconds); impressions: null
        ("weight", pa.float64()),  # feedback: as in training data; impressions: null
        ("type", pa.string()),  # feedback: the client's event type (click, watch, rating, ...); impressions: null
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


def with_feedback(dataset: Dataset, uri: str) -> Dataset:
    """The dataset with the logged feedback added to its interactions, each (user, item, time) once.

    Duplicates come from client retries and from exports that already hold
    what was fed back; the data's own row wins.
    """
    logged = read_events(uri, FEEDBACK).to_pandas()
    feedback = validate_interactions(
        logged[[Columns.user, Columns.item, Columns.timestamp, Columns.weight]], f"{uri}/{FEEDBACK}"
    )
    combined = pd.concat([dataset.interactions, feedback], ignore_index=True)
    combined = combined.drop_duplicates([Columns.user, Columns.item, Columns.timestamp], keep="first")
    added = len(combined) - len(dataset.interactions)
    duplicates = len(feedback) - added
    note = f"{uri}: {len(feedback):,} feedback events, {added:,} added to the interactions ({duplicates:,} duplicates)"
    return replace(dataset, interactions=combined.reset_index(drop=True), notes=[*dataset.notes, note])
