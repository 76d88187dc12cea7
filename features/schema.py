"""The one documented input schema, and the loader that enforces it.

Every producer (MovieLens, the synthetic generator, a user's own files) ends
up as a :class:`Dataset`; nothing downstream reads raw files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class Columns:
    """Every column name used by training and serving, in one place."""

    user = "user_id"
    item = "item_id"
    timestamp = "timestamp"
    weight = "weight"
    title = "title"
    score = "score"
    rank = "rank"


LIST_SEPARATOR = "|"
DAY = 86_400  # seconds; timestamps are unix seconds


class DataError(ValueError):
    """Bad input data; the message names the file, the column and the row."""

    def __init__(self, path: str | Path, problem: str, column: str | None = None, row: int | None = None) -> None:
        where = [str(path)]
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{': '.join(where)}: {problem}")
        self.path, self.column, self.row = str(path), column, row


@dataclass
class Dataset:
    """Interactions plus optional attribute tables, already validated.

    ``interactions`` has string ids, int64 unix-second timestamps and float32
    weights. Attribute tables are indexed by id; list columns hold tuples.
    """

    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def list_columns(table: pd.DataFrame | None) -> list[str]:
    """Multi-valued attribute columns (tuples, e.g. genres)."""
    if table is None:
        return []
    return [c for c in table.columns if table[c].dtype == object and _is_tuple_column(table[c])]


def _is_tuple_column(series: pd.Series) -> bool:
    return bool(series.map(lambda v: isinstance(v, tuple)).any())


def data_row(index: int) -> int:
    """1-based data row (the header is not counted) for a 0-based position."""
    return int(index) + 1


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or parquet file with every column as it is stored.

    CSV cells are read as strings so that ids keep their spelling (``"007"``
    stays ``"007"``); numeric attribute columns are converted later.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a CSV or parquet file")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pq.read_table(path).to_pandas(types_mapper=_plain_types)
        else:
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                sep=None if path.suffix.lower() in {".tsv", ".txt"} else ",",
                engine="python" if path.suffix.lower() in {".tsv", ".txt"} else "c",
            )
    except pd.errors.EmptyDataError as exc:  # whitespace only: non-zero size, no header
        raise DataError(path, "file is empty") from exc
    except (OSError, pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if frame.empty:
        raise DataError(path, "has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _plain_types(arrow_type: pa.DataType) -> object:
    # Keep parquet strings as plain python objects rather than pandas' Arrow-backed
    # string dtype, so CSV and parquet inputs look alike downstream.
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("python")
    return None


def _require(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            found = ", ".join(frame.columns)
            raise DataError(path, f"missing required column (found: {found})", column=column)


def _ids(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    raw = frame[column]
    missing = raw.isna()
    if missing.any():
        raise DataError(path, "empty id", column=column, row=data_row(np.argmax(missing.values)))
    return raw.map(id_text).astype(object)


def id_text(value: object) -> str:
    """The one rule for turning an id into the text it is matched by, in the data and in the API.

    Integers (and integral floats, as parquet or pandas may store integer ids)
    lose any decimal part, surrounding whitespace is dropped, anything else is
    kept as written: ``160.0`` and ``160`` are ``"160"``, ``"007"`` stays ``"007"``.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_timestamps(raw: pd.Series, path: Path) -> np.ndarray:
    """Unix seconds (int or float) or ISO 8601 strings to int64 unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
        bad = parsed.isna()
    else:
        text = raw.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            return numeric.to_numpy(dtype=np.float64).astype(np.int64)
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna() & numeric.isna()
        if not bad.any() and numeric.notna().any():
            first = int(np.argmax(numeric.notna().values))
            raise DataError(
                path,
                f"mixes unix seconds and ISO 8601 ({text.iloc[first]!r})",
                column=Columns.timestamp,
                row=data_row(first),
            )
    if bad.any():
        first = int(np.argmax(bad.values))
        raise DataError(
            path,
            f"unparsable timestamp {raw.iloc[first]!r} (expected unix seconds or ISO 8601)",
            column=Columns.timestamp,
            row=data_row(first),
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def parse_weights(raw: pd.Series, path: Path) -> np.ndarray:
    """Numeric, finite, non-negative weights; the column is optional upstream."""
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.astype(float)) | (numeric < 0)
    if bad.any():
        first = int(np.argmax(bad.values))
        raise DataError(
            path,
            f"weight must be a non-negative number, got {raw.iloc[first]!r}",
            column=Columns.weight,
            row=data_row(first),
        )
    return numeric.to_numpy(dtype=np.float32)


def validate_interactions(frame: pd.DataFrame, path: str | Path = "<interactions>") -> pd.DataFrame:
    """Check and normalise an interactions table to the canonical dtypes."""
    path = Path(path)
    _require(frame, path, [Columns.user, Columns.item, Columns.timestamp])
    out = pd.DataFrame(
        {
            Columns.user: _ids(frame, path, Columns.user).to_numpy(),
            Columns.item: _ids(frame, path, Columns.item).to_numpy(),
            Columns.timestamp: parse_timestamps(frame[Columns.timestamp], path),
        }
    )
    if Columns.weight in frame.columns:
        out[Columns.weight] = parse_weights(frame[Columns.weight], path)
    else:
        out[Columns.weight] = np.float32(1.0)
    return out


def validate_attributes(frame: pd.DataFrame, id_column: str, path: str | Path) -> pd.DataFrame:
    """Check an attribute table; return it indexed by id with typed columns.

    Numeric-looking columns become float features, other strings categorical,
    parquet lists and ``|``-separated strings multi-valued (tuples).
    """
    path = Path(path)
    _require(frame, path, [id_column])
    ids = _ids(frame, path, id_column)
    duplicated = ids.duplicated()
    if duplicated.any():
        first = int(np.argmax(duplicated.values))
        raise DataError(path, f"duplicate id {ids.iloc[first]!r}", column=id_column, row=data_row(first))
    out = pd.DataFrame(index=pd.Index(ids.to_numpy(), name=id_column))
    for column in frame.columns:
        if column == id_column:
            continue
        out[column] = _typed_attribute(frame[column], column).to_numpy()
    return out


def _typed_attribute(raw: pd.Series, column: str) -> pd.Series:
    if raw.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
        return raw.map(lambda v: tuple(str(x) for x in v) if v is not None and not _na(v) else ())
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.astype(np.float64)
    text = raw.astype(object).where(raw.notna(), None)
    if column != Columns.title:
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().sum() == text.notna().sum() and text.notna().any():
            return numeric.astype(np.float64)
        if text.dropna().astype(str).str.contains(LIST_SEPARATOR, regex=False).any():
            return text.map(
                lambda v: tuple(p.strip() for p in str(v).split(LIST_SEPARATOR) if p.strip()) if v is not None else ()
            )
    return text.map(lambda v: None if v is None else str(v))


def _na(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def load_dataset(interactions: str | Path, users: str | Path | None = None, items: str | Path | None = None) -> Dataset:
    """Load the user's files (CSV or parquet) through the documented schema."""
    inter = validate_interactions(read_table(interactions), interactions)
    user_table = validate_attributes(read_table(users), Columns.user, users) if users else None
    item_table = validate_attributes(read_table(items), Columns.item, items) if items else None
    return finalize(Dataset(inter, user_table, item_table))


def finalize(dataset: Dataset) -> Dataset:
    """Report ids absent from the attribute tables: they get unknown attributes."""
    notes = list(dataset.notes)
    for table, column, label in (
        (dataset.users, Columns.user, "users"),
        (dataset.items, Columns.item, "items"),
    ):
        if table is None:
            continue
        ids = pd.unique(dataset.interactions[column])
        missing = int((~pd.Index(ids).isin(table.index)).sum())
        if missing:
            notes.append(f"{missing} of {len(ids)} {label} have no attributes (treated as unknown)")
    dataset.notes = notes
    return dataset
