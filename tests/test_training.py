"""Training end to end: synthetic structure recovered, real data beats baselines, bad data refused."""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
import pytest

from features.synthetic import item_cluster, user_cluster
from serving.runtime import Runtime
from stages.pipeline import Query
from tests.conftest import SMALL, quick_config
from train.__main__ import EXIT_BAD_DATA, main
from train.run import train


def runtime_for(result) -> Runtime:
    return Runtime.from_store(result.ranker_tag)


def store_state(home: Path, feature_store: Path) -> list[str]:
    paths = [*home.joinpath("models").rglob("*"), *feature_store.rglob("*")]
    return sorted(str(p) for p in paths)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_synthetic_clusters_are_recovered(tmp_path, synthetic_files, fmt):
    files = synthetic_files[fmt]
    config = quick_config(tmp_path, interactions=files["interactions"], users=files["users"], items=files["items"])
    result = train(config, echo=False)
    models = result.evaluation["models"]
    assert models["two-stage (ALS + CatBoost)"]["ndcg@10"] > 1.5 * models["popular (all time)"]["ndcg@10"]

    pipeline = runtime_for(result).pipeline
    users = [f"u{i}" for i in range(0, SMALL.n_users, 7)]
    answers = pipeline.recommend([Query(u, k=10) for u in users])
    in_cluster = [
        np.mean([item_cluster(i, SMALL) == user_cluster(a.user_id, SMALL) for i in a.item_ids]) for a in answers
    ]
    assert np.mean(in_cluster) >= 0.8
    assert all(a.strategy == "two_stage" and len(a.item_ids) == 10 for a in answers)


def test_same_data_and_seed_give_same_models_and_recommendations(tmp_path, synthetic_files):
    files = synthetic_files["parquet"]
    runs = [
        train(
            quick_config(tmp_path / str(n), interactions=files["interactions"], items=files["items"]),
            echo=False,
        )
        for n in range(2)
    ]
    a, b = (runtime_for(r) for r in runs)
    np.testing.assert_array_equal(a.candidates.als.item_factors, b.candidates.als.item_factors)
    assert a.ranker.model.get_params() == b.ranker.model.get_params()
    queries = [Query(f"u{i}", k=10) for i in range(50)]
    assert [r.item_ids for r in a.pipeline.recommend(queries)] == [r.item_ids for r in b.pipeline.recommend(queries)]
    assert [r.scores for r in a.pipeline.recommend(queries)] == [r.scores for r in b.pipeline.recommend(queries)]
    assert runs[0].evaluation["models"] == runs[1].evaluation["models"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,timestamp\n1,5\n", "column 'item_id': missing required column"),
        ("user_id,item_id,timestamp\n1,2,noon\n", "column 'timestamp': row 1: unparsable timestamp 'noon'"),
        (
            "user_id,item_id,timestamp,weight\n1,2,3,x\n",
            "column 'weight': row 1: weight must be a non-negative",
        ),
        ("", "file is empty"),
    ],
)
def test_bad_data_exits_non_zero_and_leaves_stores_untouched(tmp_path, bentoml_home, capsys, content, message):
    feature_store = tmp_path / "feature_store"
    feature_store.mkdir()
    before = store_state(bentoml_home, feature_store)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code = main(["--interactions", str(bad), "--feature-store", str(feature_store), "--report-dir", str(tmp_path)])
    assert code == EXIT_BAD_DATA
    assert f"error: {bad}: {message}" in capsys.readouterr().err
    assert store_state(bentoml_home, feature_store) == before


def test_duplicate_item_ids_exit_non_zero(tmp_path, synthetic_files, bentoml_home, capsys):
    items = tmp_path / "items.csv"
    items.write_text(synthetic_files["csv"]["items"].read_text() + "i0,Again,1.0,g1\n")
    before = store_state(bentoml_home, tmp_path)
    code = main(["--interactions", str(synthetic_files["csv"]["interactions"]), "--items", str(items)])
    assert code == EXIT_BAD_DATA
    assert "column 'item_id': row 201: duplicate id 'i0'" in capsys.readouterr().err
    assert store_state(bentoml_home, tmp_path) == before


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text("factors = 8\nfactorz = 9\n")
    assert main(["--config", str(config)]) == EXIT_BAD_DATA
    assert "factorz" in capsys.readouterr().err


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
