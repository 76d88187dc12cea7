"""Training on the real MovieLens-100K: the two-stage model beats ALS, which beats popularity."""

from __future__ import annotations

import bentoml
import pytest


@pytest.mark.slow
def test_movielens_two_stage_beats_als_beats_popularity(movielens_run, bentoml_home):
    result, tmp = movielens_run
    ndcg = {name: row["ndcg@10"] for name, row in result.evaluation["models"].items()}
    assert ndcg["two-stage (ALS + CatBoost)"] >= 1.2 * ndcg["ALS"]
    assert ndcg["ALS"] > ndcg["popular (all time)"]
    assert ndcg["ALS"] > ndcg["popular (last 30 days)"]
    assert {"recsys-candidates", "recsys-ranker"} <= {m.tag.name for m in bentoml.models.list()}
    assert (tmp / "reports" / "evaluation.png").stat().st_size > 0
    assert "| two-stage (ALS + CatBoost) |" in (tmp / "reports" / "evaluation.md").read_text()
