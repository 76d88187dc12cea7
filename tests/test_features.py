"""Feature computation (known answers) and the feature store (atomic, validated)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.schema import Dataset, validate_interactions
from features.store import SnapshotError, current_version, fingerprint, read_snapshot, write_snapshot
from stages.feature_view import FeatureView

DAY = 86_400


@pytest.fixture()
def tiny() -> Dataset:
    """Two users, three items; u1 likes drama, u2 comedy; item c is only recent."""
    inter = validate_interactions(
        pd.DataFrame(
            {
                "user_id": ["u1", "u1", "u2", "u2", "u2"],
                "item_id": ["a", "b", "a", "c", "b"],
                "timestamp": [0, DAY, 2 * DAY, 60 * DAY, 59 * DAY],
                "weight": [4.0, 2.0, 1.0, 5.0, 3.0],
            }
        )
    )
    items = pd.DataFrame(
        {
            "title": ["A", "B", "C"],
            "genres": [("drama",), ("drama", "comedy"), ("comedy",)],
            "year": [1990.0, 2000, 2010],
        },
        index=pd.Index(["a", "b", "c"], name="item_id"),
    )
    users = pd.DataFrame({"job": ["x", "y"], "age": [20.0, 40.0]}, index=pd.Index(["u1", "u2"], name="user_id"))
    return Dataset(inter, users, items)


def test_item_and_user_aggregates(tiny):
    tables = compute_features(tiny, recent_days=30)
    items = tables.items
    assert items.loc[["a", "b", "c"], "pop_all"].tolist() == [2, 2, 1]
    assert items.loc[["a", "b", "c"], "pop_recent"].tolist() == [0, 1, 1]  # window: days 30..60
    assert items.loc["a", "mean_weight"] == pytest.approx(2.5)
    assert items.loc["a", "item_age_days"] == pytest.approx(60.0)
    users = tables.users
    assert users.loc["u2", "activity"] == 3
    assert users.loc["u2", "recent_items"] == ("c", "b", "a")  # latest first
    assert users.loc["u1", "days_since_last"] == pytest.approx(59.0)
    # u1's weighted mean release year: (4*1990 + 2*2000) / 6
    assert users.loc["u1", "taste_year"] == pytest.approx((4 * 1990 + 2 * 2000) / 6)


def test_affinity_and_segment_shares(tiny):
    tables = compute_features(tiny)
    share = tables.affinity.set_index(["user_id", "attribute", "value"])["share"]
    assert share[("u1", "genres", "drama")] == pytest.approx(1.0)  # a and b are both drama
    assert share[("u1", "genres", "comedy")] == pytest.approx(2 / 6)
    assert share[("u2", "genres", "comedy")] == pytest.approx(8 / 9)
    seg = tables.segments.set_index(["attribute", "value", "item_id"])["share"]
    assert seg[("job", "y", "c")] == pytest.approx(5 / 9)
    assert ("job", "x", "c") not in seg.index


def test_view_rows_match_tables(tiny):
    tables = compute_features(tiny)
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    names = view.available()
    users = view.user_rows(["u1", "u1", "nobody"])
    numeric, categorical = view.rows(
        names,
        users,
        np.array([1, 2, 0]),
        np.array([0.9, 0.5, 0.1], np.float32),
        np.array([1, 2, 1], np.float32),
    )
    col = {n: numeric[:, i] for i, n in enumerate(names.numeric)}
    assert col["pop_all"].tolist() == [2, 1, 2]
    assert col["aff_genres"][0] == pytest.approx((1.0 + 2 / 6) / 2)  # item b has two genres
    assert col["aff_genres_max"][1] == pytest.approx(2 / 6)
    assert col["genres=comedy"].tolist() == [1, 1, 0]
    assert col["diff_year"][1] == pytest.approx(2010 - (4 * 1990 + 2 * 2000) / 6, rel=1e-5)  # float32
    assert col["recent_sim_max"].tolist() == pytest.approx([1.0, 0.0, -1.0])  # unknown user: no history
    assert np.isnan(col["activity"][2]) and np.isnan(col["seg_job"][2])
    assert categorical[:, names.categorical.index("cat_job")].tolist() == ["x", "x", "<unknown>"]


def test_segment_fallback_uses_bucketed_numeric_attributes(tiny):
    view = FeatureView(compute_features(tiny), np.array(["a", "b", "c"], dtype=object))
    scores, used = view.segment_scores({"job": "y", "unknown_attribute": 1})
    assert used == ["job=y"]
    assert scores.tolist() == pytest.approx([1 / 9, 3 / 9, 5 / 9])
    assert view.segment_scores({"job": "never-seen"}) is None


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
