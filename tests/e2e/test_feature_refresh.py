"""A new feature snapshot swapped under a running server; a corrupt one ignored."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import httpx
import pytest

from features.store import current_version, read_snapshot, write_snapshot
from tests.support import KNOWN_USER, answer_of, post, serve, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def refreshing_server(movielens_run, tmp_path):
    run, trained = movielens_run
    store = tmp_path / "feature_store"
    shutil.copytree(trained / "feature_store", store)
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_FEATURE_STORE": str(store),
        "RECSYS_REFRESH_SECONDS": "0.5",
    }
    with serve("service:Recommender", env) as live:
        yield live, store


def hammer(url: str, stop: threading.Event, failures: list, count: list) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            response = http.post("/recommend", json={"user_id": KNOWN_USER, "k": 10})
            count.append(1)
            if response.status_code != 200:
                failures.append(response.status_code)


def test_feature_snapshot_swapped_without_failed_requests(refreshing_server):
    live, store = refreshing_server
    with live.client() as http:
        _, before = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
        top = before["recommendations"][0]["item_id"]
        snapshot = read_snapshot(str(store))
        snapshot.tables.items.loc[top, "title"] = "Renamed In New Snapshot"
        stop, failures, count = threading.Event(), [], []
        worker = threading.Thread(target=hammer, args=(live.url, stop, failures, count))
        worker.start()
        try:
            new_version = write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
            assert wait_for(lambda: post(http, "/model_info", {})[1]["feature_version"] == new_version)
        finally:
            stop.set()
            worker.join()
        _, after = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    assert failures == [] and len(count) > 10
    assert after["recommendations"][0]["title"] == "Renamed In New Snapshot"


def test_corrupt_snapshot_is_ignored_and_old_one_kept(refreshing_server):
    live, store = refreshing_server
    with live.client() as http:
        _, before = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
        old = current_version(str(store))
        snapshot = read_snapshot(str(store))
        bad = write_snapshot(snapshot.tables, str(store), "c" * 64)
        items = Path(store) / "snapshots" / bad / "items.parquet"
        items.write_bytes(items.read_bytes()[:200])  # truncated after publishing
        assert wait_for(lambda: post(http, "/model_info", {})[1]["feature_refresh_error"] is not None)
        status, info = post(http, "/model_info", {})
        assert info["feature_version"] == old
        assert f"snapshot {bad}" in info["feature_refresh_error"]
        status, after = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    assert status == 200 and answer_of(after) == answer_of(before)
    assert "feature refresh failed, still serving" in live.log.read_text()


def test_a_snapshot_for_half_the_catalogue_is_refused_and_filters_keep_the_whole(refreshing_server):
    """It used to be swapped in: the Comedy filter then allowed 252 of 1,682 items instead of 505."""
    live, store = refreshing_server
    comedy = {"user_id": KNOWN_USER, "k": 10, "filters": {"genres": {"include": ["Comedy"]}}}
    with live.client() as http:
        _, before = post(http, "/recommend", comedy)
        old = current_version(str(store))
        snapshot = read_snapshot(str(store))
        snapshot.tables.items = snapshot.tables.items.iloc[::2]
        half = write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
        assert wait_for(lambda: post(http, "/model_info", {})[1]["feature_refresh_error"] is not None)
        info = post(http, "/model_info", {})[1]
        assert (
            info["feature_version"] == old
            and f"snapshot {half} describes 841 of the model's 1,682 items" in (info["feature_refresh_error"])
        )
        _, after = post(http, "/recommend", comedy)
    assert after["message"] == before["message"] and "of 1682 items" in after["message"]
