"""The retrain loop closed: feedback the service logged is in the next model."""

from __future__ import annotations

import pandas as pd

from features.events import FEEDBACK
from serving.events import EventLog
from serving.runtime import Runtime
from stages.pipeline import Query
from tests.support import quick_config
from train.run import train


def test_training_with_events_learns_the_logged_feedback(tmp_path, synthetic_files):
    files = synthetic_files["parquet"]
    end = int(pd.read_parquet(files["interactions"])["timestamp"].max())
    log = EventLog(str(tmp_path / "events"), max_rows=1000, max_seconds=3600)
    log.append(
        FEEDBACK,
        [{"user_id": "newcomer", "item_id": str(i), "timestamp": end + i, "weight": 1.0} for i in range(1, 6)],
    )
    log.close()
    config = quick_config(tmp_path, interactions=files["interactions"], events=str(tmp_path / "events"))
    result = train(config, echo=False)
    pipeline = Runtime.from_store(result.ranker_tag).pipeline
    assert "newcomer" in pipeline.candidates.user_index
    [answer] = pipeline.recommend([Query("newcomer", k=5)])
    assert answer.strategy == "two_stage"
    assert not {str(i) for i in range(1, 6)} & set(answer.item_ids)  # what they fed back counts as seen
