"""The event log writer: bounded by rows and by time, complete at close, never a half-written file."""

from __future__ import annotations

import time

import pyarrow.parquet as pq

from features.events import FEEDBACK, IMPRESSIONS, read_events
from serving.api_models import FeedbackEvent, ModelTags, RecommendedItem, RecommendResponse
from serving.events import EventLog, Recorder


def _files(root, kind):
    """Published files (a name starting with ``_`` is still being written)."""
    return sorted(f for f in (root / kind).rglob("*.parquet") if not f.name.startswith("_"))


def test_rows_are_written_at_the_row_bound_and_the_rest_at_close(tmp_path):
    log = EventLog(str(tmp_path), max_rows=3, max_seconds=3600, worker="w1")
    log.append(FEEDBACK, [{"user_id": "u", "item_id": str(i), "timestamp": i, "weight": 1.0} for i in range(4)])
    assert len(_files(tmp_path, FEEDBACK)) == 1  # 4 rows reached the bound of 3: written at once
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
