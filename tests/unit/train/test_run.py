"""Training end to end on small synthetic data: structure recovered, runs reproducible, saving all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import numpy as np
import pytest

from features.synthetic import item_cluster, user_cluster
from serving.runtime import Runtime
from stages.card import CANDIDATES_MODEL
from stages.pipeline import Query, TwoStageRecommender
from stages.ranker import Ranker
from tests.support import SMALL, quick_config
from train import run as run_module
from train.run import train


def runtime_for(result) -> Runtime:
    return Runtime.from_store(result.ranker_tag)


def saved_model(ranker: Ranker, path: Path) -> dict:
    """The ranker as CatBoost saves it (JSON: trees, borders, CTR tables, parameters).

    Two fits differ only in a random model id and the finish time, so those go.
    """
    ranker.model.save_model(str(path), format="json")
    model = json.loads(path.read_text())
    identity = {key: model["model_info"].pop(key) for key in ("model_guid", "train_finish_time")}
    assert all(identity.values())  # they were there: if CatBoost renames them, look again
    return model


def feature_rows(pipeline: TwoStageRecommender, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ranker's input rows for these users' candidates, as the pipeline builds them."""
    queries = [Query(u, k=10) for u in users]
    batch = pipeline.candidate_lists(queries)
    indices = np.array([pipeline.candidates.user_index[u] for u in users], dtype=np.int64)
    return pipeline.pair_rows(indices, batch)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_synthetic_clusters_are_recovered(tmp_path, synthetic_files, fmt, request):
    if fmt == "parquet":  # the session's small run is this very training
        result = request.getfixturevalue("small_run")[0]
    else:
        files = synthetic_files[fmt]
        config = quick_config(tmp_path, interactions=files["interactions"], users=files["users"], items=files["items"])
        result = train(config, echo=False)
    models = result.evaluation["per_user_split"]["models"]
    assert models["two-stage (ALS + CatBoost)"]["ndcg@10"] > 1.5 * models["popular (all time)"]["ndcg@10"]

    pipeline = runtime_for(result).pipeline
    users = [f"u{i}" for i in range(0, SMALL.n_users, 7)]
    answers = pipeline.recommend([Query(u, k=10) for u in users])
    in_cluster = [
        np.mean([item_cluster(i, SMALL) == user_cluster(a.user_id, SMALL) for i in a.item_ids]) for a in answers
    ]
    assert np.mean(in_cluster) >= 0.8
    assert all(a.strategy == "two_stage" and len(a.item_ids) == 10 for a in answers)


def test_same_data_and_seed_give_same_models_and_recommendations(tmp_path, synthetic_files, small_run):
    """This process trains again what the session's small run trained (under xdist, maybe in another worker)."""
    files = synthetic_files["parquet"]
    config = quick_config(tmp_path, interactions=files["interactions"], users=files["users"], items=files["items"])
    runs = [small_run[0], train(config, echo=False)]
    a, b = (runtime_for(r) for r in runs)
    np.testing.assert_array_equal(a.candidates.als.item_factors, b.candidates.als.item_factors)
    # Same trees: the same saved model (but for its id and finish time), the same scores on the same rows.
    assert a.ranker.names == b.ranker.names
    assert saved_model(a.ranker, tmp_path / "a.json") == saved_model(b.ranker, tmp_path / "b.json")
    numeric, categorical = feature_rows(a.pipeline, [f"u{i}" for i in range(50)])
    assert len(numeric) > 0
    np.testing.assert_array_equal(a.ranker.score(numeric, categorical), b.ranker.score(numeric, categorical))
    queries = [Query(f"u{i}", k=10) for i in range(50)]
    assert [r.item_ids for r in a.pipeline.recommend(queries)] == [r.item_ids for r in b.pipeline.recommend(queries)]
    assert [r.scores for r in a.pipeline.recommend(queries)] == [r.scores for r in b.pipeline.recommend(queries)]
    assert runs[0].evaluation["per_user_split"] == runs[1].evaluation["per_user_split"]


def test_failed_ranker_save_deletes_the_new_candidates_model(tmp_path, synthetic_files, monkeypatch):
    """train/run.py::save(): a candidates model without its ranker must not stay in the store."""
    files = synthetic_files["csv"]
    config = quick_config(tmp_path, interactions=files["interactions"], items=files["items"])
    before = {str(m.tag) for m in bentoml.models.list()}
    deleted: list[str] = []
    real_delete = bentoml.models.delete

    def failing_save(*args, **kwargs):
        raise OSError("disk full while saving the ranker")

    def recording_delete(tag, *args, **kwargs):
        deleted.append(str(tag))
        return real_delete(tag, *args, **kwargs)

    monkeypatch.setattr(run_module, "save_rankers", failing_save)
    monkeypatch.setattr(bentoml.models, "delete", recording_delete)
    with pytest.raises(OSError, match="disk full while saving the ranker"):
        train(config, echo=False)
    assert len(deleted) == 1 and deleted[0].startswith(f"{CANDIDATES_MODEL}:")  # the fresh one, created then removed
    assert deleted[0] not in before
    assert {str(m.tag) for m in bentoml.models.list()} == before  # nothing new in the model store
    assert not (tmp_path / "feature_store").exists()  # the feature store is written last, so never reached


def test_data_too_short_for_the_backtest_still_trains_and_says_why(tmp_path, small_dataset):
    inter = small_dataset.interactions
    start = int(inter["timestamp"].min())
    short = inter[inter["timestamp"] < start + 26 * 86_400]  # 26 days: its second half is shorter than 14 days
    path = tmp_path / "short.parquet"
    short.to_parquet(path)
    result = train(quick_config(tmp_path, interactions=path, save=False), echo=False)
    assert result.evaluation["backtest"] == {
        "skipped": "the data spans 26 days: too short for a 14-day horizon after cuts in its second half"
    }
    assert "models" in result.evaluation["per_user_split"]
    assert "Backtest (primary) skipped: the data spans 26 days" in (tmp_path / "reports" / "evaluation.md").read_text()
