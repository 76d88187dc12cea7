"""The parquet feature store: versioned snapshots plus a ``CURRENT`` pointer.

Layout under the root (a local path or any pyarrow filesystem URI)::

    snapshots/<version>/{items,users,affinity,segments}.parquet
    snapshots/<version>/manifest.json
    CURRENT                       # the name of the live version

A snapshot is written under a temporary name and renamed into place; the
pointer is replaced last, so a reader never sees a half-written snapshot and
a failed write leaves the previous one live.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.compute import FeatureTables
from features.schema import Columns, Dataset

FORMAT_VERSION = 1
TABLES = ("items", "users", "affinity", "segments")
MODEL_SNAPSHOT_DIR = "features"  # training packs a snapshot here inside the candidates model
INDEXED = {"items": Columns.item, "users": Columns.user}


class SnapshotError(RuntimeError):
    """A snapshot that is missing, truncated or inconsistent with its manifest."""


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: its manifest and its tables."""

    manifest: dict[str, Any]
    tables: FeatureTables

    @property
    def version(self) -> str:
        return self.manifest["version"]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and a path inside it for a path or URI."""
    if "://" not in uri:
        from pathlib import Path

        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def fingerprint(dataset: Dataset) -> str:
    """A sha256 over the input data: same data, same fingerprint."""
    digest = hashlib.sha256()
    for frame in (dataset.interactions, dataset.users, dataset.items):
        if frame is None:
            digest.update(b"-")
            continue
        flat = frame.reset_index() if frame.index.name else frame
        # Tuples (lists of ids) sit only in object columns: mapping every cell had made a Python object of each of
        # 100M interactions' 400M cells (training's peak at that size). Digests differ from 0.4.2's.
        flat = flat.assign(**{c: _tuples_joined(flat[c]) for c in flat.columns if flat[c].dtype == object})
        digest.update(pd.util.hash_pandas_object(flat, index=False).to_numpy().tobytes())
        digest.update(",".join(map(str, flat.columns)).encode())
    return digest.hexdigest()


def _tuples_joined(column: pd.Series) -> pd.Series:
    return column.map(lambda v: "|".join(v) if isinstance(v, tuple) else v)


def _to_arrow(frame: pd.DataFrame, name: str) -> pa.Table:
    flat = frame.reset_index() if name in INDEXED else frame
    for column in flat.columns:
        if flat[column].map(lambda v: isinstance(v, tuple)).any():
            flat[column] = flat[column].map(lambda v: list(v) if isinstance(v, tuple) else [])
    return pa.Table.from_pandas(flat, preserve_index=False)


def _from_arrow(table: pa.Table, name: str) -> pd.DataFrame:
    frame = table.to_pandas()
    for field in table.schema:
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            # Lists come back as tuples, as computed: ids as text, numbers as floats.
            cast = float if pa.types.is_floating(field.type.value_type) else str
            frame[field.name] = frame[field.name].map(
                lambda v, cast=cast: tuple(cast(x) for x in v) if v is not None else ()
            )
    if name in INDEXED:
        frame = frame.set_index(INDEXED[name])
    return frame


def write_snapshot(
    tables: FeatureTables,
    root: str,
    data_fingerprint: str,
    version: str | None = None,
    created_at: str | None = None,
) -> str:
    """Write a snapshot atomically and point ``CURRENT`` at it; return its version."""
    fs, base = resolve(root)
    created_at = created_at or datetime.now(UTC).isoformat()
    stamp = datetime.fromisoformat(created_at).strftime("%Y%m%dT%H%M%S%f")
    version = version or f"{stamp}-{data_fingerprint[:8]}"
    fs.create_dir(f"{base}/snapshots", recursive=True)
    staging = f"{base}/snapshots/.tmp-{version}-{uuid.uuid4().hex[:8]}"
    fs.create_dir(staging, recursive=True)
    try:
        schema = {}
        for name in TABLES:
            arrow = _to_arrow(getattr(tables, name), name)
            with fs.open_output_stream(f"{staging}/{name}.parquet") as out:
                pq.write_table(arrow, out)
            schema[name] = {"rows": arrow.num_rows, "columns": {f.name: str(f.type) for f in arrow.schema}}
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": created_at,
            "fingerprint": data_fingerprint,
            "tables": schema,
            "info": tables.info,
        }
        with fs.open_output_stream(f"{staging}/manifest.json") as out:
            out.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
        target = f"{base}/snapshots/{version}"
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            fs.delete_dir(target)
        fs.move(staging, target)
    except BaseException:
        fs.delete_dir(staging)
        raise
    pointer_tmp = f"{base}/CURRENT.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(pointer_tmp) as out:
        out.write(version.encode())
    fs.move(pointer_tmp, f"{base}/CURRENT")
    return version


def current_version(root: str) -> str:
    """The live version name, read from ``CURRENT`` (cheap: used for polling)."""
    fs, base = resolve(root)
    try:
        with fs.open_input_stream(f"{base}/CURRENT") as src:
            version = src.read().decode().strip()
    except (OSError, FileNotFoundError) as exc:
        raise SnapshotError(f"no feature store at {root} (CURRENT missing)") from exc
    if not version or "/" in version:
        raise SnapshotError(f"{root}/CURRENT is malformed: {version!r}")
    return version


def read_manifest(root: str, version: str) -> dict[str, Any]:
    """A snapshot's manifest alone (cheap: polling compares it with the one being served)."""
    fs, base = resolve(root)
    try:
        with fs.open_input_stream(f"{base}/snapshots/{version}/manifest.json") as src:
            manifest = json.loads(src.read())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot {version}: manifest.json cannot be read") from exc
    if not isinstance(manifest, dict) or "version" not in manifest:
        raise SnapshotError(f"snapshot {version}: manifest.json has no version")
    return manifest


def manifest_identity(manifest: dict[str, Any]) -> tuple[object, ...]:
    """What makes two snapshots the same, whatever their folders are called."""
    return (manifest.get("version"), manifest.get("created_at"), manifest.get("fingerprint"), manifest.get("tables"))


def read_snapshot(root: str, version: str | None = None) -> Snapshot:
    """Load and validate a snapshot; raise :class:`SnapshotError` if it is bad."""
    fs, base = resolve(root)
    version = version or current_version(root)
    folder = f"{base}/snapshots/{version}"
    try:
        with fs.open_input_stream(f"{folder}/manifest.json") as src:
            manifest = json.loads(src.read())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(f"snapshot {version}: unsupported format {manifest.get('format_version')}")
        frames = {}
        for name in TABLES:
            with fs.open_input_file(f"{folder}/{name}.parquet") as src:
                arrow = pq.read_table(src)
            expected = manifest["tables"][name]
            if arrow.num_rows != expected["rows"]:
                raise SnapshotError(
                    f"snapshot {version}: {name}.parquet has {arrow.num_rows} rows, manifest says {expected['rows']}"
                )
            missing = set(expected["columns"]) - set(arrow.schema.names)
            if missing:
                raise SnapshotError(f"snapshot {version}: {name}.parquet lacks columns {sorted(missing)}")
            frames[name] = _from_arrow(arrow, name)
    except SnapshotError:
        raise
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise SnapshotError(f"snapshot {version} at {root} cannot be read: {type(exc).__name__}: {exc}") from exc
    return Snapshot(manifest, FeatureTables(info=manifest["info"], **frames))
