"""What users like this one take: item shares within user segments (age band, gender, occupation).

The same tables answer cold start: a new user's attributes pick the segments
whose favourite items they get.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from features.families.base import (
    Column,
    ComputeContext,
    FeatureFamily,
    FreshUsers,
    PairCompute,
    Pairs,
    ViewContext,
    one_object_per_value,
    user_state,
    with_unknown,
)
from features.schema import Columns

NUMERIC_BUCKETS = 5
MAX_SEGMENT_VALUES = 64  # user attributes with more values (zip codes) are not segments


def bucket_edges(values: pd.Series) -> list[float]:
    """Quantile edges that turn a numeric user attribute into a segment."""
    clean = values.dropna().to_numpy(dtype=np.float64)
    if clean.size == 0:
        return []
    edges = np.unique(np.quantile(clean, np.linspace(0, 1, NUMERIC_BUCKETS + 1)[1:-1]))
    return [float(e) for e in edges]


def bucket_label(value: float | None, edges: list[float]) -> str | None:
    """The segment value of a numeric attribute: ``q0`` .. ``qN``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return f"q{int(np.searchsorted(edges, value, side='right'))}"


def bucket_labels(values: pd.Series, edges: list[float]) -> pd.Series:
    """:func:`bucket_label` of every value at once (value by value, among the largest parts of a worker's start
    at 138k users, profiled)."""
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    labels = np.array([f"q{i}" for i in range(len(edges) + 1)], dtype=object)[
        np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="right")
    ]
    labels[np.isnan(numbers)] = None
    return pd.Series(labels, index=values.index, dtype=object)


def user_segment_values(
    users: pd.DataFrame, kinds: dict[str, str], buckets: dict[str, list[float]]
) -> dict[str, pd.Series]:
    """Each segment attribute's value per user (numeric ones bucketed)."""
    values = {}
    for attribute, kind in kinds.items():
        if kind == "numeric":
            values[attribute] = bucket_labels(users[attribute], buckets.get(attribute, []))
        elif kind == "categorical":
            column = users[attribute]
            if column.nunique(dropna=True) <= MAX_SEGMENT_VALUES:
                values[attribute] = column
    return values


class Segments(FeatureFamily):
    """``seg_<attr>``: the candidate's share of the weight of users in the user's segment."""

    name = "segments"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter, users = data.interactions, data.users
        (user_codes, user_ids), (item_codes, item_ids) = data.user_codes, data.item_codes
        buckets = {c: bucket_edges(users[c]) for c, k in data.user_kinds.items() if k == "numeric"}
        data.info["buckets"] = buckets
        parts = []
        weights = inter[Columns.weight].to_numpy()
        for attribute, per_user in user_segment_values(users, data.user_kinds, buckets).items():
            # Codes for values and items, not the objects (ComputeContext.user_codes); sorted like them, so the
            # groups' order is theirs. A value per interaction as an object was 1.1 GB at 20M.
            user_value, values = pd.factorize(per_user.reindex(user_ids), sort=True)  # -1: none
            row_value = user_value[user_codes]
            kept = row_value >= 0
            # One integer key per (value, item), ordered as the pair: grouping by the two columns cost as much
            # again in pandas' own codes.
            row_weights = pd.Series(weights[kept])
            by_pair = row_weights.groupby(row_value[kept] * len(item_ids) + item_codes[kept]).sum()
            value, item = np.divmod(by_pair.index.to_numpy(), len(item_ids))
            total = row_weights.groupby(row_value[kept]).sum()
            frame = pd.DataFrame(
                {
                    "value": values[value],
                    Columns.item: item_ids[item],
                    "share": by_pair.to_numpy() / total.reindex(value).to_numpy(),
                }
            )
            frame.insert(0, "attribute", attribute)
            parts.append(frame)
        if not parts:
            data.segments = pd.DataFrame({"attribute": [], "value": [], Columns.item: [], "share": []})
            return
        out = pd.concat(parts, ignore_index=True)
        out["value"] = out["value"].astype(str)
        out["share"] = out["share"].astype(np.float32)
        data.segments = out

    def __init__(self, view: ViewContext) -> None:
        super().__init__(view)
        # attribute -> (value code, segments x items share matrix, each snapshot user's code or -1)
        self.tables: dict[str, tuple[dict[str, int], np.ndarray, np.ndarray]] = {}
        self.stored: dict[str, np.ndarray] = {}  # attribute -> each snapshot user's raw value
        segments = view.tables.segments
        per_user = user_segment_values(view.users, view.user_kinds, view.info.get("buckets", {}))
        for attribute, values_of_users in per_user.items():
            seg = segments[segments["attribute"] == attribute]
            values = sorted(seg["value"].unique())
            code = {v: i for i, v in enumerate(values)}
            matrix = np.zeros((len(values) + 1, len(view.item_ids)), dtype=np.float32)
            cols = seg[Columns.item].map(view.item_position)
            known = cols.notna().to_numpy()
            rows = seg["value"].map(code).to_numpy(dtype=np.int64)  # (none: an empty int array)
            shares = seg["share"].to_numpy(dtype=np.float32)
            matrix[rows[known], cols.to_numpy()[known].astype(np.int64)] = shares[known]
            user_codes = values_of_users.map(lambda v, c=code: c.get(str(v), -1) if v is not None else -1)
            self.tables[attribute] = (code, matrix, with_unknown(user_codes.to_numpy(dtype=np.int64), -1))
            self.stored[attribute] = one_object_per_value(view.users[attribute].to_numpy(dtype=object))

    def columns(self) -> list[Column]:
        return [Column(f"seg_{a}", "pair", compute=_segment_share(*self.tables[a][1:], _key(a))) for a in self.tables]

    def fresh(self, users: FreshUsers) -> None:
        """A request's attributes place the user in segments (they replace the users file's, as in the cold start)."""
        if not any(users.attributes):
            return
        buckets = self.view.info.get("buckets", {})
        for attribute, (code, _, user_codes) in self.tables.items():
            codes = user_codes[users.rows].copy()
            for slot, attributes in enumerate(users.attributes):
                raw = attributes.get(attribute)
                if raw is not None and raw == raw:
                    value = _segment_value(raw, buckets.get(attribute))
                    codes[slot] = code.get(value, -1) if value is not None else -1
            users.state[_key(attribute)] = codes

    def attributes_of(self, row: int) -> dict[str, object]:
        """A snapshot user's own values of the segment attributes (missing ones left out)."""
        values = {a: column[row] for a, column in self.stored.items()}
        return {a: v for a, v in values.items() if v is not None and v == v}

    def scores(self, attributes: dict[str, object]) -> tuple[np.ndarray, list[str]] | None:
        """Item scores from the segments a new user's attributes fall into; ``None`` when none matches."""
        total = np.zeros(len(self.view.item_ids), dtype=np.float32)
        used = []
        buckets = self.view.info.get("buckets", {})
        for attribute, raw in attributes.items():
            if attribute not in self.tables or raw is None or raw != raw:
                continue
            value = _segment_value(raw, buckets.get(attribute))
            if value is None:
                continue
            code, matrix, _ = self.tables[attribute]
            if value in code:
                total += matrix[code[value]]
                used.append(f"{attribute}={raw}")
        return (total, used) if used else None


def _segment_value(raw: object, edges: list[float] | None) -> str | None:
    """A request's or the users file's attribute value as a segment value (``None``: cannot be one).

    Numeric attributes are bucketed; a value that is not a number there (``"abc"`` for age)
    matches no segment rather than failing the request.
    """
    if edges is None:
        return str(raw)
    try:
        # float() is tried on any value: one it rejects is no segment (caught below), not a failed request.
        return bucket_label(float(cast(Any, raw)), edges)
    except (TypeError, ValueError):
        return None


def _key(attribute: str) -> str:
    return f"segment_code_{attribute}"


def _segment_share(matrix: np.ndarray, user_codes: np.ndarray, key: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        codes = user_state(user_codes, pairs, key)
        if pairs.one_owner:  # one code (user_state): the user's row of shares, or no segment at all
            return matrix[codes, pairs.items] if codes >= 0 else np.full(len(pairs.items), np.nan, matrix.dtype)
        return np.where(codes >= 0, matrix[codes, pairs.items], np.nan)

    return compute
