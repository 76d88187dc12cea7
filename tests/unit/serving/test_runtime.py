"""Runtime.refresh_once with a small trained model: a new snapshot is swapped in, a bad one is kept out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from features.store import current_version, read_snapshot, write_snapshot
from serving.runtime import Runtime
from stages.pipeline import Query


@pytest.fixture()
def store(small_run, tmp_path) -> Path:
    """A private copy of the small run's feature store, free to change."""
    _, trained = small_run
    copy = tmp_path / "feature_store"
    shutil.copytree(trained / "feature_store", copy)
    return copy


@pytest.fixture()
def runtime(small_run, store) -> Runtime:
    run, _ = small_run
    return Runtime.from_store(run.ranker_tag, feature_store=str(store))


def known_user(runtime: Runtime) -> str:
    return str(runtime.candidates.user_ids[0])


def test_nothing_new_nothing_swapped(runtime):
    pipeline = runtime.pipeline
    assert runtime.refresh_once() is False
    assert runtime.pipeline is pipeline and runtime.refresh_error is None


def test_new_snapshot_is_swapped_in(runtime, store):
    user = known_user(runtime)
    before = runtime.pipeline
    top = runtime.pipeline.recommend([Query(user, k=1)])[0].item_ids[0]
    snapshot = read_snapshot(str(store))
    snapshot.tables.items.loc[top, "title"] = "Renamed In New Snapshot"
    new_version = write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
    assert runtime.refresh_once() is True
    assert runtime.view.version == new_version == runtime.info().feature_version
    assert runtime.pipeline is not before and before.view.version != new_version  # requests in flight keep theirs
    assert runtime.pipeline.candidates is before.candidates and runtime.pipeline.ranker is before.ranker
    assert runtime.pipeline.recommend([Query(user, k=1)])[0].titles == ["Renamed In New Snapshot"]
    assert runtime.refresh_once() is False  # already serving it


def corrupt_snapshot(store: Path) -> str:
    """Publish a snapshot, then truncate one of its tables."""
    snapshot = read_snapshot(str(store))
    bad = write_snapshot(snapshot.tables, str(store), "c" * 64)
    items = store / "snapshots" / bad / "items.parquet"
    items.write_bytes(items.read_bytes()[:200])
    return bad


def test_corrupt_snapshot_is_kept_out_and_the_error_recorded(runtime, store, caplog):
    old = runtime.view.version
    pipeline = runtime.pipeline
    bad = corrupt_snapshot(store)
    assert current_version(str(store)) == bad
    with caplog.at_level("ERROR", logger="recsys"):
        assert runtime.refresh_once() is False
    assert runtime.pipeline is pipeline and runtime.view.version == old
    assert f"snapshot {bad}" in runtime.refresh_error
    assert runtime.info().feature_refresh_error == runtime.refresh_error
    assert f"feature refresh failed, still serving {old}" in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR", logger="recsys"):
        assert runtime.refresh_once() is False  # the same bad version is not read again
    assert not caplog.records  # nor logged again
    assert f"snapshot {bad}" in runtime.refresh_error


def test_error_cleared_once_a_good_snapshot_arrives(runtime, store):
    corrupt_snapshot(store)
    assert runtime.refresh_once() is False and runtime.refresh_error is not None
    good = read_snapshot(str(store), runtime.view.version)
    new_version = write_snapshot(good.tables, str(store), "d" * 64)
    assert runtime.refresh_once() is True
    assert runtime.view.version == new_version
    assert runtime.refresh_error is None and runtime.info().feature_refresh_error is None


def test_unreadable_pointer_is_recorded(runtime, store):
    (store / "CURRENT").write_text("no-such-version")
    pipeline = runtime.pipeline
    assert runtime.refresh_once() is False
    assert runtime.pipeline is pipeline and runtime.refresh_error is not None
