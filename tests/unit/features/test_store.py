"""The feature store: snapshots are atomic, validated on read, and addressed by a pointer."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.compute import compute_features
from features.store import SnapshotError, current_version, fingerprint, read_snapshot, write_snapshot


def test_snapshot_round_trip_and_pointer(tmp_path, tiny):
    tables = compute_features(tiny)
    root = str(tmp_path / "store")
    version = write_snapshot(tables, root, fingerprint(tiny))
    assert current_version(root) == version
    snapshot = read_snapshot(root)
    pd.testing.assert_frame_equal(snapshot.tables.items, tables.items, check_dtype=False, check_index_type=False)
    pd.testing.assert_frame_equal(snapshot.tables.users, tables.users, check_dtype=False, check_index_type=False)
    manifest = json.loads((Path(root) / "snapshots" / version / "manifest.json").read_text())
    assert manifest["tables"]["items"]["rows"] == 3
    assert manifest["fingerprint"] == fingerprint(tiny)
    assert not [p for p in (Path(root) / "snapshots").iterdir() if p.name.startswith(".tmp")]


def test_fingerprint_changes_with_data(tiny):
    before = fingerprint(tiny)
    tiny.interactions.loc[0, "weight"] = 5.0
    assert fingerprint(tiny) != before


def test_fingerprint_reads_lists_of_ids_and_is_the_same_for_the_same_data(tiny):
    before = fingerprint(tiny)
    assert fingerprint(tiny) == before
    listed = next(c for c in tiny.items.columns if tiny.items[c].map(lambda v: isinstance(v, tuple)).any())
    first = tiny.items.index[0]
    tiny.items.at[first, listed] = (*tiny.items.at[first, listed], "another")
    assert fingerprint(tiny) != before


def test_truncated_snapshot_is_rejected(tmp_path, tiny):
    root = str(tmp_path / "store")
    version = write_snapshot(compute_features(tiny), root, "f" * 64)
    target = Path(root) / "snapshots" / version / "items.parquet"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(SnapshotError, match=f"snapshot {version} at .* cannot be read"):
        read_snapshot(root)


def test_manifest_row_count_mismatch_is_rejected(tmp_path, tiny):
    root = str(tmp_path / "store")
    version = write_snapshot(compute_features(tiny), root, "f" * 64)
    manifest_path = Path(root) / "snapshots" / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["users"]["rows"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=r"users\.parquet has 2 rows, manifest says 99"):
        read_snapshot(root)


def test_failed_write_keeps_previous_snapshot_live(tmp_path, tiny, monkeypatch):
    root = str(tmp_path / "store")
    first = write_snapshot(compute_features(tiny), root, "a" * 64)
    broken = compute_features(tiny)
    broken.segments = None  # cannot be written
    with pytest.raises(AttributeError):
        write_snapshot(broken, root, "b" * 64)
    assert current_version(root) == first
    assert [p.name for p in (Path(root) / "snapshots").iterdir()] == [first]


def test_store_through_a_pyarrow_filesystem_uri(tmp_path, tiny):
    uri = f"file://{tmp_path}/uri-store"
    version = write_snapshot(compute_features(tiny), uri, "d" * 64)
    assert current_version(uri) == version
    assert read_snapshot(uri).tables.items.loc["a", "title"] == "A"
    assert (tmp_path / "uri-store" / "CURRENT").read_text() == version
