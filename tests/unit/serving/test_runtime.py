"""Runtime.refresh_once with a small trained model: a new snapshot is swapped in, a bad one is kept out."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pandas as pd
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


def test_inconsistent_snapshot_is_caught_recorded_and_cleared_when_current_points_back(runtime, store, caplog):
    served = current_version(str(store))
    snapshot = read_snapshot(str(store))
    ghost = snapshot.tables.affinity.head(1).copy()
    ghost[ghost.columns[0]] = "ghost-user-not-in-users"
    snapshot.tables.affinity = pd.concat([snapshot.tables.affinity, ghost], ignore_index=True)
    bad = write_snapshot(snapshot.tables, str(store), "e" * 64)
    with caplog.at_level("ERROR", logger="recsys"):
        assert runtime.refresh_once() is False  # nothing escapes, whatever the loader raised
    assert runtime.refresh_error and f"snapshot {bad}" in runtime.refresh_error
    assert "Error" not in runtime.refresh_error and str(store) not in runtime.refresh_error
    (store / "CURRENT").write_text(served)
    assert runtime.refresh_once() is False
    assert runtime.refresh_error is None and runtime.info().feature_refresh_error is None


def test_copy_under_another_name_is_not_reloaded(runtime, store, monkeypatch):
    served = current_version(str(store))
    shutil.copytree(store / "snapshots" / served, store / "snapshots" / "copy-of-served")
    (store / "CURRENT").write_text("copy-of-served")
    calls = []
    monkeypatch.setattr(runtime.snapshots, "load", lambda *a: calls.append(a))
    for _ in range(3):
        assert runtime.refresh_once() is False
    assert calls == [] and runtime.refresh_error is None


def test_swap_logged_at_info_with_old_and_new_version(runtime, store, caplog):
    old = runtime.view.version
    snapshot = read_snapshot(str(store))
    new = write_snapshot(snapshot.tables, str(store), "f" * 64)
    with caplog.at_level("INFO", logger="recsys"):
        assert runtime.refresh_once() is True
    assert f"feature snapshot swapped: {old} -> {new}" in caplog.text


def test_a_swap_that_fails_is_recorded_and_the_snapshot_not_counted_as_served(runtime, store, monkeypatch):
    old = runtime.view.version
    snapshot = read_snapshot(str(store))
    new = write_snapshot(snapshot.tables, str(store), "a" * 64)

    def broken(view):
        raise MemoryError("no room for the new pipeline")

    monkeypatch.setattr(runtime.pipeline, "with_view", broken)
    assert runtime.refresh_once() is False
    assert runtime.view.version == old and runtime.snapshots.view.version == old
    assert runtime.refresh_error and f"snapshot {new} was read but could not be swapped in" in runtime.refresh_error
    monkeypatch.undo()
    runtime.snapshots._retry_at = 0.0  # as when RETRY_UNEXPECTED_SECONDS have passed
    assert runtime.refresh_once() is True  # not taken for the served one: read again, and swapped in this time
    assert runtime.view.version == new and runtime.refresh_error is None


def test_model_info_shows_no_absolute_paths(runtime, store):
    (store / "CURRENT").write_text("no-such-version")
    runtime.refresh_once()
    info = runtime.info()
    assert info.feature_source == "feature_store"
    assert str(store) not in (info.feature_refresh_error or "") and "Error" not in info.feature_refresh_error


def test_the_refresh_loop_runs_after_swap_once_per_new_snapshot(runtime, store):
    swapped = threading.Event()
    calls = []

    def after_swap() -> None:
        calls.append(runtime.view.version)
        swapped.set()

    runtime.start_refresh(0.05, after_swap=after_swap)
    try:
        time.sleep(0.2)
        assert calls == []  # polls that find nothing new do not call it
        snapshot = read_snapshot(str(store))
        new_version = write_snapshot(snapshot.tables, str(store), "d" * 64)
        assert swapped.wait(10)
        time.sleep(0.2)
        assert calls == [new_version]
    finally:
        runtime.stop_refresh()


def test_a_snapshot_describing_half_the_catalogue_is_kept_out(runtime, store):
    """It used to be swapped in: the other half lost its features and attributes (filters saw half the items)."""
    served = runtime.view.version
    snapshot = read_snapshot(str(store))
    items = snapshot.tables.items
    snapshot.tables.items = items.iloc[: len(items) // 2]
    write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
    assert runtime.refresh_once() is False and runtime.view.version == served
    assert f"of the model's {len(runtime.candidates.item_ids):,} items" in runtime.refresh_error


def test_the_split_topology_s_candidate_stage_keeps_out_what_the_ranker_keeps_out(runtime, store, caplog):
    """It swapped in any snapshot CURRENT named: half the catalogue lost its attributes there, where filters apply."""
    import bentoml

    from serving.split import CandidateStage

    stage = CandidateStage.from_model(bentoml.models.get(runtime.tags.candidates), str(store), runtime.names)
    served = stage.view.version
    snapshot = read_snapshot(str(store))
    half = snapshot.tables.items.iloc[: len(snapshot.tables.items) // 2]
    snapshot.tables.items = half
    bad = write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
    with caplog.at_level("ERROR", logger="recsys"):
        for _ in range(3):
            assert stage.refresh_once() is False and stage.view.version == served
    assert f"snapshot {bad} describes {len(half):,} of the model's" in stage.snapshots.error
    assert caplog.text.count("candidates stage: feature refresh failed") == 1  # once, not every poll
    assert runtime.refresh_once() is False and runtime.refresh_error == stage.snapshots.error  # the same verdict
    good = write_snapshot(read_snapshot(str(store), served).tables, str(store), "e" * 64)
    assert stage.refresh_once() is True and stage.view.version == good and stage.snapshots.error is None


def test_the_candidate_stage_refuses_a_snapshot_without_the_ranker_s_features(runtime, store):
    """Else it would serve a snapshot the ranker stage refuses, and the two stages would serve different ones."""
    import bentoml

    from serving.runtime import IncompatibleModels
    from serving.split import CandidateStage
    from stages.feature_view import FeatureNames

    names = FeatureNames((*runtime.names.numeric, "a_feature_no_family_makes"), runtime.names.categorical)
    with pytest.raises(IncompatibleModels, match=r"lacks features the ranker needs: \['a_feature_no_family_makes'\]"):
        CandidateStage.from_model(bentoml.models.get(runtime.tags.candidates), str(store), names)


def test_a_snapshot_that_broke_the_loader_is_read_again_later_one_that_failed_its_checks_is_not(runtime, store):
    """A loader error may be a passing I/O error: retried after a while; a failed check is the snapshot's own."""
    served = current_version(str(store))
    snapshot = read_snapshot(str(store))
    ghost = snapshot.tables.affinity.head(1).copy()
    ghost[ghost.columns[0]] = "ghost-user-not-in-users"
    snapshot.tables.affinity = pd.concat([snapshot.tables.affinity, ghost], ignore_index=True)
    write_snapshot(snapshot.tables, str(store), "e" * 64)
    follower = runtime.snapshots
    reads = []
    load = follower.load
    follower.load = lambda *a: reads.append(a) or load(*a)
    assert runtime.refresh_once() is False and runtime.refresh_once() is False
    assert len(reads) == 1  # not read again at once
    follower._retry_at = 0.0  # the retry time has come
    assert runtime.refresh_once() is False and len(reads) == 2
    half = read_snapshot(str(store), served)
    half.tables.items = half.tables.items.iloc[: len(half.tables.items) // 2]
    write_snapshot(half.tables, str(store), "f" * 64)
    for _ in range(3):
        assert runtime.refresh_once() is False
    assert len(reads) == 3 and follower._retry_at == float("inf")  # a failed check: final until CURRENT changes
