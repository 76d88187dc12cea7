"""The event log writer: bounded by rows and by time, complete at close, never a half-written file."""

from __future__ import annotations

import logging
import threading
import time

import pyarrow.parquet as pq
import pytest

from features.events import FEEDBACK, IMPRESSIONS, read_events
from serving.api_models import FeedbackEvent, ModelTags, RecommendedItem, RecommendResponse
from serving.events import EventLog, EventLogFull, EventLogUnusable, Recorder, check_writable


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _event(i: int) -> dict:
    return {"user_id": "u", "item_id": str(i), "timestamp": i, "weight": 1.0}


def _files(root, kind):
    """Published files (a name starting with ``_`` is still being written)."""
    return sorted(f for f in (root / kind).rglob("*.parquet") if not f.name.startswith("_"))


def test_rows_are_written_at_the_row_bound_and_the_rest_at_close(tmp_path):
    log = EventLog(str(tmp_path), max_rows=3, max_seconds=3600, worker="w1")
    log.append(FEEDBACK, [_event(i) for i in range(4)])
    # 4 rows reached the bound of 3: the writer thread is woken and writes them, long before its hour-long timer.
    assert _wait_for(lambda: len(_files(tmp_path, FEEDBACK)) == 1)
    log.append(FEEDBACK, [{"user_id": "u", "item_id": "x", "timestamp": 9, "weight": 1.0}])
    assert log.close() == 1
    files = _files(tmp_path, FEEDBACK)
    assert [f.name for f in files] == ["w1-000000.parquet", "w1-000001.parquet"]
    assert files[0].parent.name.startswith("date=")
    assert read_events(str(tmp_path), FEEDBACK).column("item_id").to_pylist() == ["0", "1", "2", "3", "x"]
    assert not list(tmp_path.rglob("_*"))  # staging files are moved into place


def test_rows_are_written_within_the_time_bound(tmp_path):
    log = EventLog(str(tmp_path), max_rows=1000, max_seconds=0.2)
    log.append(IMPRESSIONS, [{"user_id": "u", "item_id": "a", "position": 1}])
    deadline = time.monotonic() + 5
    while not _files(tmp_path, IMPRESSIONS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pq.read_table(_files(tmp_path, IMPRESSIONS)[0]).num_rows == 1
    log.close()


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the log's directory should be")
    log = EventLog(str(blocker), max_rows=1000, max_seconds=3600)
    log.append(FEEDBACK, [{"user_id": "u", "item_id": "a", "timestamp": 1, "weight": 1.0}])
    assert log.flush() == 0
    blocker.unlink()
    assert log.close() == 1
    assert read_events(str(blocker), FEEDBACK).num_rows == 1


def test_a_row_the_schema_cannot_hold_is_dropped_alone_and_the_timer_lives_on(tmp_path):
    # The API refuses such a timestamp now; before, one such event lost every row buffered with it and
    # stopped the timed flush for good.
    log = EventLog(str(tmp_path), max_rows=1000, max_seconds=0.1)
    good = [{"user_id": "u", "item_id": str(i), "timestamp": i, "weight": 1.0} for i in range(3)]
    log.append(FEEDBACK, [good[0], {"user_id": "poison", "item_id": "x", "timestamp": 2**64, "weight": 1.0}, good[1]])
    deadline = time.monotonic() + 5
    while not _files(tmp_path, FEEDBACK) and time.monotonic() < deadline:
        time.sleep(0.05)
    log.append(FEEDBACK, [good[2]])  # the timer still runs: written without a close
    while len(_files(tmp_path, FEEDBACK)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_files(tmp_path, FEEDBACK)) == 2
    log.close()
    assert read_events(str(tmp_path), FEEDBACK).column("item_id").to_pylist() == ["0", "1", "2"]


def test_recorder_logs_each_shown_item_and_feedback(tmp_path):
    recorder = Recorder(EventLog(str(tmp_path), max_rows=1000, max_seconds=3600))
    response = RecommendResponse(
        user_id="u1",
        recommendations=[RecommendedItem(item_id=i, score=1.0, rank=r) for r, i in enumerate("ab", start=1)],
        strategy="two_stage",
        model=ModelTags(candidates="c:1", ranker="r:1"),
        request_id="req1",
    )
    recorder.impressions([response])
    assert recorder.feedback([FeedbackEvent(user_id="u1", item_id="b", request_id="req1", type="click")]) == 1
    recorder.close()
    shown = read_events(str(tmp_path), IMPRESSIONS).to_pylist()
    assert [(r["item_id"], r["position"], r["model"], r["request_id"]) for r in shown] == [
        ("a", 1, "r:1", "req1"),
        ("b", 2, "r:1", "req1"),
    ]
    [taken] = read_events(str(tmp_path), FEEDBACK).to_pylist()
    assert (taken["item_id"], taken["type"], taken["weight"]) == ("b", "click", 1.0)
    assert abs(taken["timestamp"] - time.time()) < 60  # no timestamp given: when it was received


def test_a_recorder_without_a_log_records_nothing():
    recorder = Recorder(None)
    assert not recorder.enabled
    assert recorder.feedback([FeedbackEvent(user_id="u", item_id="i")]) == 0


class _SlowLog(EventLog):
    """A filesystem stand-in that takes its time and notes which thread wrote."""

    def __init__(self, *args, **kwargs) -> None:
        self.writers: list[str] = []
        super().__init__(*args, **kwargs)

    def _write(self, kind, table, logged_at) -> None:
        self.writers.append(threading.current_thread().name)
        time.sleep(0.3)
        super()._write(kind, table, logged_at)


def test_appending_never_writes_in_the_callers_thread(tmp_path):
    log = _SlowLog(str(tmp_path), max_rows=1, max_seconds=3600)
    for i in range(5):
        log.append(FEEDBACK, [_event(i)])  # each reaches the bound: the writer is woken, the caller goes on
    assert _wait_for(lambda: log.writers)
    assert set(log.writers) == {"recsys-event-log"}
    log.close()
    assert read_events(str(tmp_path), FEEDBACK).num_rows == 5


def test_feedback_is_refused_while_the_log_cannot_be_written_and_none_acknowledged_is_lost(tmp_path, caplog):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the log's directory should be")
    dropped: list[tuple[str, int]] = []
    log = EventLog(
        str(blocker), max_rows=1000, max_seconds=3600, max_buffered=10, on_drop=lambda k, n: dropped.append((k, n))
    )
    log.append(FEEDBACK, [_event(0), _event(1)])  # acknowledged: the log has not failed yet
    with caplog.at_level(logging.ERROR, "recsys.events"):
        for _ in range(5):
            assert log.flush() == 0
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1  # once per interval
    assert not any(r.exc_info for r in caplog.records)  # an I/O failure is a line, not a traceback
    assert not log.healthy
    with pytest.raises(EventLogFull) as refused:
        log.append(FEEDBACK, [_event(2)])
    assert refused.value.retry_after >= 1 and log.refused == 1
    log.append(IMPRESSIONS, [{"user_id": "u", "item_id": str(i), "position": 1} for i in range(15)])
    assert dropped == [(IMPRESSIONS, 5)]  # nobody was told impressions were kept: past the bound, counted
    blocker.unlink()
    assert log.flush() == 12 and log.healthy
    log.append(FEEDBACK, [_event(3)])  # written again: accepted again
    log.close()
    assert read_events(str(blocker), FEEDBACK).column("item_id").to_pylist() == ["0", "1", "3"]


def test_feedback_is_refused_when_the_buffer_is_full(tmp_path):
    log = EventLog(str(tmp_path), max_rows=1000, max_seconds=3600, max_buffered=3)
    log.append(FEEDBACK, [_event(0), _event(1)])
    with pytest.raises(EventLogFull):
        log.append(FEEDBACK, [_event(2), _event(3)])  # refused whole: never half a request
    log.append(FEEDBACK, [_event(4)])
    log.close()
    assert read_events(str(tmp_path), FEEDBACK).column("item_id").to_pylist() == ["0", "1", "4"]


def test_recorder_passes_the_refusal_on(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("x")
    log = EventLog(str(blocker), max_rows=1000, max_seconds=3600)
    log.append(FEEDBACK, [_event(0)])
    log.flush()
    recorder = Recorder(log)
    with pytest.raises(EventLogFull):
        recorder.feedback([FeedbackEvent(user_id="u", item_id="i")])


def test_check_writable_refuses_a_file_and_a_path_under_a_file(tmp_path):
    check_writable(str(tmp_path / "new" / "events"))  # created when missing
    assert (tmp_path / "new" / "events").is_dir() and not list((tmp_path / "new" / "events").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(EventLogUnusable, match="is a file"):
        check_writable(str(tmp_path / "file"))
    with pytest.raises(EventLogUnusable, match="cannot be written") as bad:
        check_writable(str(tmp_path / "file" / "events"))
    assert "Error" not in str(bad.value)  # no exception class names for operators
