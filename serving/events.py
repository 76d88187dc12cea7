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
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.events import FEEDBACK, IMPRESSIONS, SCHEMA, filesystem
from serving.api_models import FeedbackEvent, RecommendResponse
from serving.metrics import FEEDBACK as FEEDBACK_EVENTS

log = logging.getLogger("recsys.events")
MAX_BUFFERED = 100_000  # rows held per kind while the log cannot be written: past it feedback is refused
FAILURE_LOG_SECONDS = 30.0  # while writes fail, one log line per this many seconds, with counts


class EventLogUnusable(RuntimeError):
    """The event log's root cannot be written: the server must not start and acknowledge feedback it drops."""


class EventLogFull(RuntimeError):
    """Feedback that cannot be kept right now (the log is failing or its buffer is full): answer 503."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def new_request_id() -> str:
    """A random id for one answered request, echoed in feedback to join it to what was shown."""
    return uuid.uuid4().hex


def check_writable(uri: str) -> None:
    """Write and remove a probe file under the log's root; :class:`EventLogUnusable` says why it cannot be.

    Run at start-up, so a log that cannot be written stops the server instead of
    acknowledging feedback it will never keep.
    """
    try:
        fs, root = filesystem(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise EventLogUnusable(f"RECSYS_EVENT_LOG={uri!r} is a file: it must be a directory or a filesystem URI")
        fs.create_dir(root, recursive=True)
        probe = f"{root}/_probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except EventLogUnusable:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise EventLogUnusable(f"RECSYS_EVENT_LOG={uri!r} cannot be written: {_reason(exc)}") from exc


class EventLog:
    """Buffered, per-worker writer of impressions and feedback.

    Callers only append to memory (under a lock, no I/O): every write happens
    on the log's own thread, woken when a buffer reaches ``max_rows`` and every
    ``max_seconds``. Feedback, which is acknowledged to the client, is kept
    until written: while the last write failed or its buffer is full, new
    feedback is refused (:class:`EventLogFull`, a 503). Impressions, which
    nobody is told were kept, are dropped past the bound and counted.
    """

    def __init__(
        self,
        uri: str,
        max_rows: int = 1000,
        max_seconds: float = 5.0,
        worker: str | None = None,
        max_buffered: int = MAX_BUFFERED,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.fs, self.root = filesystem(uri)
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.max_buffered = max_buffered
        self.worker = worker or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dropped = {IMPRESSIONS: 0, FEEDBACK: 0}  # rows lost: impressions past the bound, failed final flushes
        self.on_drop = on_drop  # told of every loss (the service counts them on /metrics)
        self.refused = 0  # feedback rows answered 503
        self.failing_since: float | None = None  # monotonic time of the first failed write of a run of failures
        self._last_error = ""
        self._last_report = 0.0
        self._sequence = itertools.count()
        self._buffers: dict[str, list[dict]] = {IMPRESSIONS: [], FEEDBACK: []}
        self._lock = threading.Lock()  # callers append, the writer thread swaps buffers out
        self._write_lock = threading.Lock()  # one flush at a time: the thread's, or close()'s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="recsys-event-log", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self.failing_since is None

    def append(self, kind: str, rows: list[dict]) -> None:
        """Queue rows of one kind in memory; the writer thread writes them within ``max_seconds``.

        Feedback is refused whole (:class:`EventLogFull`) when it cannot be kept;
        impressions past the bound are dropped and counted.
        """
        now = time.time()
        with self._lock:
            buffer = self._buffers[kind]
            room = self.max_buffered - len(buffer)
            if kind == FEEDBACK and (self.failing_since is not None or len(rows) > room):
                self.refused += len(rows)
                why = "cannot be written" if self.failing_since is not None else "is full"
                raise EventLogFull(f"the event log {why}: nothing recorded, try again later", self.retry_after)
            lost = max(len(rows) - max(room, 0), 0)
            buffer.extend({"logged_at": now, **row} for row in rows[: len(rows) - lost])
            full = len(buffer) >= self.max_rows
        if lost:
            self._drop(kind, lost)
        if full:
            self._wake.set()

    @property
    def retry_after(self) -> int:
        return max(1, round(self.max_seconds))

    def flush(self, kind: str | None = None) -> int:
        """Write what is buffered (one kind, or all) now, in the caller's thread; the rows written."""
        with self._write_lock:
            written = sum(self._flush_kind(name) for name in ([kind] if kind else list(self._buffers)))
        return written

    def close(self) -> int:
        """Stop the writer thread and write everything left (called at shutdown); the rows written."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.max_seconds + 5)
        written = self.flush()
        lost = {kind: len(rows) for kind, rows in self._buffers.items() if rows}
        if lost:
            log.error("event log: shutting down with rows that could not be written, lost: %s", lost)
            for kind, n in lost.items():
                self._drop(kind, n)
        return written

    def _drop(self, kind: str, rows: int) -> None:
        self.dropped[kind] += rows
        if self.on_drop is not None:
            self.on_drop(kind, rows)

    def _write_loop(self) -> None:
        """Flush when a buffer fills and every ``max_seconds``; outlives any one failure."""
        while not self._stop.is_set():
            self._wake.wait(self.max_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() flushes what is left
            try:
                self.flush()
            except Exception:  # a bug, not an I/O failure: keep the thread, show the fault once per interval
                log.exception("event log: a flush failed unexpectedly; the next one will try again")

    def _flush_kind(self, name: str) -> int:
        with self._lock:
            rows, self._buffers[name] = self._buffers[name], []
        if not rows:
            return 0
        try:
            table = _table(rows)
        except UNFIT:
            # A row the schema cannot hold must not cost the others theirs: they are written, it is dropped.
            fit = [row for row in rows if _fits(row)]
            self._drop(name, len(rows) - len(fit))
            log.error("event log: %d %s rows the schema cannot hold were dropped", len(rows) - len(fit), name)
            rows, table = fit, _table(fit)
            if not rows:
                return 0
        try:
            self._write(name, table, rows[0]["logged_at"])
        except (OSError, pa.ArrowException) as exc:
            self._keep(name, rows)
            self._failed(exc)
            return 0
        self._recovered()
        return len(rows)

    def _keep(self, name: str, rows: list[dict]) -> None:
        """Put rows that could not be written back in front of the buffer: feedback whole, impressions bounded."""
        lost = 0
        with self._lock:
            merged = rows + self._buffers[name]
            if name == IMPRESSIONS and len(merged) > self.max_buffered:
                lost = len(merged) - self.max_buffered
                merged = merged[-self.max_buffered :]
            self._buffers[name] = merged
        if lost:
            self._drop(name, lost)

    def _failed(self, exc: BaseException) -> None:
        """Note a failed write; one line per :data:`FAILURE_LOG_SECONDS` with what is waiting, no traceback."""
        now = time.monotonic()
        first = self.failing_since is None
        if first:
            self.failing_since = now
        self._last_error = _reason(exc)
        if first or now - self._last_report >= FAILURE_LOG_SECONDS:
            self._last_report = now
            with self._lock:
                waiting = {kind: len(rows) for kind, rows in self._buffers.items()}
            log.error(
                "event log: cannot write to %s for %.0f s (%s); rows waiting: %s; feedback refused (503): %d, "
                "impressions dropped: %d",
                self.root,
                now - self.failing_since,
                self._last_error,
                waiting,
                self.refused,
                self.dropped[IMPRESSIONS],
            )

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.warning("event log: writing again after %.0f s of failures", time.monotonic() - self.failing_since)
            self.failing_since = None

    def _write(self, kind: str, table: pa.Table, logged_at: float) -> None:
        day = datetime.fromtimestamp(logged_at, UTC).strftime("%Y-%m-%d")
        directory = f"{self.root}/{kind}/date={day}"
        self.fs.create_dir(directory, recursive=True)
        name = f"{self.worker}-{next(self._sequence):06d}.parquet"
        staging = f"{directory}/_{name}"
        pq.write_table(table, staging, filesystem=self.fs)
        self.fs.move(staging, f"{directory}/{name}")


def _reason(exc: BaseException) -> str:
    """An error's message without the exception's class name (operators read it in logs and /model_info)."""
    text = str(exc).strip() or "unknown error"
    return text.splitlines()[0][:300]


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
            arm = response.experiment
            in_arm = {} if arm is None else {"experiment": arm.name, "arm": arm.arm, "arm_share": arm.share,
                                              "arm_forced": arm.forced, "shadow": arm.shadow,
                                              "session_id": arm.session_id}  # fmt: skip
            rows += [
                {
                    "request_id": response.request_id,
                    "user_id": response.user_id,
                    "item_id": item.item_id,
                    "position": item.rank,
                    "score": item.score,
                    "strategy": response.strategy,
                    "model": response.model.ranker if response.model else None,
                    "team": item.team,
                    **in_arm,
                }
                for item in items
            ]
            if arm is None or not arm.shadow:  # a shadow list shares its request_id with the list shown
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
