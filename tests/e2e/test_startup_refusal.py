"""`bentoml serve` refuses to start, with a message, on models or features that do not fit together."""

from __future__ import annotations

import shutil

import pytest

from tests.support import run_until_exit

pytestmark = pytest.mark.slow


def test_refuses_mismatched_candidates_model(movielens_run, small_run):
    code, output = run_until_exit(
        "service:Recommender",
        {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_CANDIDATES_TAG": small_run[0].candidates_tag},
    )
    assert code != 0
    assert f"was trained against candidates model {movielens_run[0].candidates_tag}" in output


def test_refuses_feature_store_without_needed_features(movielens_run, small_run):
    synthetic_store = small_run[1] / "feature_store"  # no gender, occupation or zip code: MovieLens users have them
    code, output = run_until_exit(
        "service:Recommender",
        {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_FEATURE_STORE": str(synthetic_store)},
    )
    assert code != 0
    assert "lacks features the ranker needs" in output


def test_refuses_an_event_log_it_cannot_write(movielens_run, tmp_path):
    blocker = tmp_path / "events"
    blocker.write_text("a file, not a directory")
    code, output = run_until_exit(
        "service:Recommender", {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_EVENT_LOG": str(blocker)}
    )
    assert code != 0
    assert "RECSYS_EVENT_LOG" in output and "is a file" in output


def test_refuses_a_blank_api_key_instead_of_serving_without_authentication(movielens_run):
    code, output = run_until_exit(
        "service:Recommender", {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_API_KEY": "   "}
    )
    assert code != 0
    assert "RECSYS_API_KEY is set but empty or blank" in output


def test_refuses_a_hidden_items_file_it_cannot_read(movielens_run, tmp_path):
    """Serving withdrawn items because the list broke would fail open: the server does not start."""
    run, trained = movielens_run
    store = tmp_path / "feature_store"
    shutil.copytree(trained / "feature_store", store)
    (store / "hidden_items.txt").write_bytes(bytes(range(128, 256)))
    code, output = run_until_exit(
        "service:Recommender", {"RECSYS_RANKER_TAG": run.ranker_tag, "RECSYS_FEATURE_STORE": str(store)}
    )
    assert code != 0
    assert "hidden items: hidden_items.txt is not UTF-8 text" in output
