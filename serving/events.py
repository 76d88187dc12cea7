"""The event log writer: each worker buffers impressions and feedback and writes its own parquet files.

Schema, layout and reader are in :mod:`features.events` (training reads them
too). Why not ``bentoml.monitor``: its default monitor writes one JSON log
record per call through Python logging to local, daily-rotated files in
BentoML's own layout; this log must reach any pyarrow filesystem
(``s3://...``) in a schema training reads back. Each worker writes only its
own files (no file locks). A buffer is written when it holds ``max_rows``
rows, every ``max_seconds``, and at shutdown; a file is written under a
name starting with ``_`` (which readers skip) and then moved into place, so
a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from features.events import FEEDBACK, IMPRESSIONS, SCHEMA, filesystem
from serving.api_models import FeedbackEvent, RecommendResponse
from serving.metrics import FEEDBACK as FEEDBACK_EVENTS

log = logging.getLogger("recsys.events")
MAX_BUFFERED = 100_000  # rows kept per kind while the log cannot be written; older ones are dropped


def new_request_id() -> str:
    """A random id for one answered request, echoed in feedback to join it to what was shown."""
    return uuid.uuid4().hex


class EventLog:
    """Buffered, per-worker writer of impressions and feedback."""

    def __init__(self, uri: str, max_rows: int = 1000, max_seconds: float = 5.0, worker: str | None = None) -> None:
        self.fs, self.root = filesystem(uri)
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.worker = worker or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = itertools.count()
        self._buffers: dict[str, list[dict]] = {IMPRESSIONS: [], FEEDBACK: []}
        self._lock = threading.Lock()  # the event loop appends, the flush thread swaps buffers out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_every, name="recsys-event-log", daemon=True)
        self._thread.start()

    def append(self, kind: str, rows: list[dict]) -> None:
        """Queue rows of one kind; written within ``max_seconds`` or once ``max_rows`` are waiting."""
        now = time.time()
        with self._lock:
            buffer = self._buffers[kind]
            buffer.extend({"logged_at": now, **row} for row in rows)
            full = len(buffer) >= self.max_rows
        if full:
            self.flush(kind)

    def flush(self, kind: str | None = None) -> int:
        """Write what is buffered (one kind, or all); the rows written."""
        written = 0
        for name in [kind] if kind else list(self._buffers):
            with self._lock:
                rows, self._buffers[name] = self._buffers[name], []
            if not rows:
                continue
            try:
                table = _table(rows)
            except UNFIT:
                # A row the schema cannot hold must not cost the others theirs: they are written, it is dropped.
                fit = [row for row in rows if _fits(row)]
                log.error("event log: %d %s rows the schema cannot hold were dropped", len(rows) - len(fit), name)
                rows, table = fit, _table(fit)
                if not rows:
                    continue
            try:
                self._write(name, table, rows[0]["logged_at"])
                written += len(rows)
            except OSError:
                log.exception("event log: %d %s rows could not be written; kept for the next flush", len(rows), name)
                with self._lock:
                    # Kept for the next flush, but bounded: a log that cannot be written must not eat memory.
                    self._buffers[name] = (rows + self._buffers[name])[-MAX_BUFFERED:]
        return written

    def close(self) -> int:
        """Stop the timer and write everything left (called at shutdown)."""
        self._stop.set()
        self._thread.join(timeout=self.max_seconds + 1)
        return self.flush()

    def _flush_every(self) -> None:
        while not self._stop.wait(self.max_seconds):
            try:
                self.flush()
            except Exception:  # the timer must outlive any one failure, or nothing is written until shutdown
                log.exception("event log: a timed flush failed; the next one will try again")

    def _write(self, kind: str, table: pa.Table, logged_at: float) -> None:
        day = datetime.fromtimestamp(logged_at, UTC).strftime("%Y-%m-%d")
        directory = f"{self.root}/{kind}/date={day}"
        self.fs.create_dir(directory, recursive=True)
        name = f"{self.worker}-{next(self._sequence):06d}.parquet"
        staging = f"{directory}/_{name}"
        pq.write_table(table, staging, filesystem=self.fs)
        self.fs.move(staging, f"{directory}/{name}")


# What pyarrow raises for a value its column cannot hold (an int64 timestamp of 2**64, text for a number).
UNFIT = (pa.ArrowException, OverflowError, TypeError, ValueError)


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _fits(row: dict) -> bool:
    """Whether the schema can hold a row (checked one row at a time: only after a whole buffer failed)."""
    try:
        _table([row])
    except UNFIT:
        return False
    return True


class Recorder:
    """What the service logs: each answer's impressions and each feedback event, and whether feedback hit a list.

    Whether a fed-back item was in the list its ``request_id`` names is known
    for the lists this worker served recently (``remember`` of them); other
    feedback counts as ``unknown`` on ``/metrics`` but is logged all the same.
    """

    def __init__(self, event_log: EventLog | None, remember: int = 10_000) -> None:
        self.log = event_log
        self.remember = remember
        self._shown: OrderedDict[str, frozenset[str]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.log is not None

    def impressions(self, responses: list[RecommendResponse]) -> None:
        """One row per shown item of each answer."""
        if self.log is None:
            return
        rows = []
        for response in responses:
            items = response.recommendations
            rows += [
                {
                    "request_id": response.request_id,
                    "user_id": response.user_id,
                    "item_id": item.item_id,
                    "position": item.rank,
                    "score": item.score,
                    "strategy": response.strategy,
                    "model": response.model.ranker if response.model else None,
                }
                for item in items
            ]
            self._shown[response.request_id] = frozenset(item.item_id for item in items)
        while len(self._shown) > self.remember:
            self._shown.popitem(last=False)
        self.log.append(IMPRESSIONS, rows)

    def feedback(self, events: list[FeedbackEvent]) -> int:
        """Log feedback events (the time received when the client gave none); the number accepted."""
        if self.log is None:
            return 0
        now = int(time.time())
        self.log.append(
            FEEDBACK,
            [
                {
                    "request_id": e.request_id,
                    "user_id": e.user_id,
                    "item_id": e.item_id,
                    "timestamp": now if e.timestamp is None else e.timestamp,
                    "weight": e.weight,
                    "type": e.type,
                }
                for e in events
            ],
        )
        for event in events:
            shown = self._shown.get(event.request_id) if event.request_id else None
            outcome = "unknown" if shown is None else "recommended" if event.item_id in shown else "not_recommended"
            FEEDBACK_EVENTS.labels(outcome=outcome).inc()
        return len(events)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
