"""Feature tables turned into arrays aligned with the candidate model's items.

Built once per snapshot (at start-up, on refresh, once per training step);
on the request path the ranker's rows are assembled with numpy indexing only.
Training and serving both go through :meth:`FeatureView.rows`, so the
features the ranker learns from are the features it is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.compute import (
    MAX_ONE_HOT_VALUES,
    FeatureTables,
    bucket_label,
    user_segment_values,
)
from features.schema import Columns

UNKNOWN = "<unknown>"
PAIR_FEATURES = ("als_score", "als_rank")
ITEM_AGGREGATES = ("pop_all", "pop_recent", "mean_weight", "item_age_days")
USER_AGGREGATES = ("activity", "user_mean_weight", "days_since_last")


@dataclass(frozen=True)
class FeatureNames:
    """The ranker's input columns: numeric ones first, then categorical."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class FeatureView:
    """Dense per-item and per-user arrays for one feature snapshot.

    ``item_ids`` fixes the item order (the candidate model's); users are
    looked up by id, and row ``-1`` (the last) means "unknown user".
    """

    def __init__(
        self,
        tables: FeatureTables,
        item_ids: np.ndarray,
        item_vectors: np.ndarray | None = None,
        version: str = "",
    ) -> None:
        self.version = version
        self._plans: dict[FeatureNames, _RowPlan] = {}
        self.info = tables.info
        self.item_ids = np.asarray(item_ids, dtype=object)
        items = tables.items.reindex(self.item_ids)
        users = tables.users
        self.user_row = {uid: i for i, uid in enumerate(users.index)}
        self.n_users = len(users)
        item_kinds: dict[str, str] = tables.info["item_attributes"]
        user_kinds: dict[str, str] = tables.info["user_attributes"]

        self.titles = (
            items[Columns.title].astype(object).where(items[Columns.title].notna(), None).to_numpy()
            if Columns.title in items
            else np.full(len(self.item_ids), None, dtype=object)
        )
        self._item_num: dict[str, np.ndarray] = {
            c: items[c].to_numpy(dtype=np.float32, na_value=np.nan)
            for c in [*ITEM_AGGREGATES, *(c for c, k in item_kinds.items() if k == "numeric")]
        }
        self._item_cat: dict[str, np.ndarray] = {
            c: _categories(items[c]) for c, k in item_kinds.items() if k == "categorical"
        }
        self._user_num: dict[str, np.ndarray] = {
            c: _with_unknown(users[c].to_numpy(dtype=np.float32, na_value=np.nan), np.nan)
            for c in [*USER_AGGREGATES, *(c for c, k in user_kinds.items() if k == "numeric")]
        }
        self._user_cat: dict[str, np.ndarray] = {
            c: _with_unknown(_categories(users[c]), UNKNOWN) for c, k in user_kinds.items() if k == "categorical"
        }
        self._taste: dict[str, tuple[np.ndarray, np.ndarray]] = {
            c: (
                self._item_num[c],
                _with_unknown(users[f"taste_{c}"].to_numpy(np.float32, na_value=np.nan), np.nan),
            )
            for c, k in item_kinds.items()
            if k == "numeric" and f"taste_{c}" in users
        }
        # Unit-length item embeddings and each user's latest items (-1 pads),
        # for "how close is this candidate to what the user just did".
        self._vectors = None
        if item_vectors is not None:
            norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
            self._vectors = (item_vectors / np.maximum(norms, 1e-9)).astype(np.float32)
            position = {iid: i for i, iid in enumerate(self.item_ids)}
            recent = users["recent_items"] if "recent_items" in users else pd.Series([()] * len(users))
            width = max((len(r) for r in recent), default=0) or 1
            self._recent = np.full((self.n_users + 1, width), -1, dtype=np.int64)
            for row, latest in enumerate(recent):
                found = [position[i] for i in latest if i in position]
                self._recent[row, : len(found)] = found
        self._one_hot: dict[str, np.ndarray] = {}
        self._affinity: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for attribute, kind in item_kinds.items():
            if kind == "numeric":
                continue
            share = tables.affinity[tables.affinity["attribute"] == attribute]
            values = sorted(share["value"].unique())
            onehot = _item_value_matrix(items[attribute], kind, values)
            user_share = np.zeros((self.n_users + 1, len(values)), dtype=np.float32)
            rows = share[Columns.user].map(self.user_row).to_numpy()
            cols = np.searchsorted(values, share["value"].to_numpy())
            user_share[rows, cols] = share["share"].to_numpy(dtype=np.float32)
            self._affinity[attribute] = (user_share, onehot)
            if kind == "list" and len(values) <= MAX_ONE_HOT_VALUES:
                for j, value in enumerate(values):
                    self._one_hot[f"{attribute}={value}"] = onehot[:, j]

        self._segments: dict[str, tuple[dict[str, int], np.ndarray, np.ndarray]] = {}
        item_pos = {iid: i for i, iid in enumerate(self.item_ids)}
        per_user = user_segment_values(users, user_kinds, tables.info.get("buckets", {}))
        for attribute, values_of_users in per_user.items():
            seg = tables.segments[tables.segments["attribute"] == attribute]
            values = sorted(seg["value"].unique())
            code = {v: i for i, v in enumerate(values)}
            matrix = np.zeros((len(values) + 1, len(self.item_ids)), dtype=np.float32)
            cols = seg[Columns.item].map(item_pos)
            known = cols.notna().to_numpy()
            matrix[seg["value"].map(code).to_numpy()[known], cols.to_numpy()[known].astype(np.int64)] = seg[
                "share"
            ].to_numpy(dtype=np.float32)[known]
            user_codes = values_of_users.map(lambda v, c=code: c.get(str(v), -1) if v is not None else -1)
            user_codes = _with_unknown(user_codes.to_numpy(dtype=np.int64), -1)
            self._segments[attribute] = (code, matrix, user_codes)

    # -- what exists ---------------------------------------------------------
    def available(self) -> FeatureNames:
        """Every feature this snapshot can produce, in a stable order."""
        numeric = [
            *PAIR_FEATURES,
            *self._item_num,
            *self._one_hot,
            *self._user_num,
            *(n for a in self._affinity for n in (f"aff_{a}", f"aff_{a}_max")),
            *(f"seg_{a}" for a in self._segments),
            *(f"diff_{a}" for a in self._taste),
            *(("recent_sim_max", "recent_sim_mean") if self._vectors is not None else ()),
        ]
        categorical = [*self._item_cat, *self._user_cat]
        return FeatureNames(tuple(numeric), tuple(f"cat_{c}" for c in categorical))

    def missing(self, names: FeatureNames) -> list[str]:
        """Features the ranker needs that this snapshot cannot produce."""
        have = set(self.available().all)
        return [n for n in names.all if n not in have]

    def user_rows(self, user_ids: list[str]) -> np.ndarray:
        """Row of each user in this snapshot, ``-1`` when it has none."""
        return np.array([self.user_row.get(u, -1) for u in user_ids], dtype=np.int64)

    # -- assembling rows ---------------------------------------------------
    def rows(
        self,
        names: FeatureNames,
        user_rows: np.ndarray,
        items: np.ndarray,
        als_scores: np.ndarray,
        als_ranks: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Numeric (float32) and categorical (object) matrices for pairs.

        ``user_rows`` (snapshot rows, -1 unknown) and ``items`` (candidate
        model indices) are parallel arrays, one entry per (user, item) pair.
        """
        plan = self._plan(names)
        numeric = np.empty((len(items), len(names.numeric)), dtype=np.float32)
        numeric[:, plan.item_cols] = plan.item_block[items]
        numeric[:, plan.user_cols] = plan.user_block[user_rows]
        for j, name in plan.pair_cols:
            numeric[:, j] = self._numeric(name, user_rows, items, als_scores, als_ranks)
        categorical = np.empty((len(items), len(names.categorical)), dtype=object)
        categorical[:, plan.item_cat_cols] = plan.item_cat_block[items]
        categorical[:, plan.user_cat_cols] = plan.user_cat_block[user_rows]
        return numeric, categorical

    def prepare(self, names: FeatureNames) -> None:
        """Build the row plan for a ranker now, not on the first request."""
        self._plan(names)

    def _plan(self, names: FeatureNames) -> _RowPlan:
        """Per-item and per-user columns stacked once, so a request gathers each block in one step."""
        plan = self._plans.get(names)
        if plan is None:
            per_item = {**self._item_num, **self._one_hot}
            item_cols = [j for j, n in enumerate(names.numeric) if n in per_item]
            user_cols = [j for j, n in enumerate(names.numeric) if n in self._user_num]
            cats = [n.removeprefix("cat_") for n in names.categorical]
            item_cat_cols = [j for j, c in enumerate(cats) if c in self._item_cat]
            user_cat_cols = [j for j, c in enumerate(cats) if c not in self._item_cat]
            n_items, n_users = len(self.item_ids), self.n_users + 1
            plan = _RowPlan(
                item_cols=item_cols,
                item_block=_stack([per_item[names.numeric[j]] for j in item_cols], n_items, np.float32),
                user_cols=user_cols,
                user_block=_stack([self._user_num[names.numeric[j]] for j in user_cols], n_users, np.float32),
                pair_cols=[(j, n) for j, n in enumerate(names.numeric) if j not in {*item_cols, *user_cols}],
                item_cat_cols=item_cat_cols,
                item_cat_block=_stack([self._item_cat[cats[j]] for j in item_cat_cols], n_items, object),
                user_cat_cols=user_cat_cols,
                user_cat_block=_stack([self._user_cat[cats[j]] for j in user_cat_cols], n_users, object),
            )
            self._plans[names] = plan
        return plan

    def _numeric(
        self, name: str, users: np.ndarray, items: np.ndarray, scores: np.ndarray, ranks: np.ndarray
    ) -> np.ndarray:
        if name == "als_score":
            return scores
        if name == "als_rank":
            return ranks
        if name in self._item_num:
            return self._item_num[name][items]
        if name in self._one_hot:
            return self._one_hot[name][items]
        if name in self._user_num:
            return self._user_num[name][users]
        if name.startswith("aff_"):
            attribute = name.removeprefix("aff_").removesuffix("_max")
            user_share, onehot = self._affinity[attribute]
            product = user_share[users] * onehot[items]
            if name.endswith("_max"):
                return product.max(axis=1) if product.shape[1] else np.zeros(len(items), np.float32)
            count = np.maximum(onehot[items].sum(axis=1), 1.0)
            return product.sum(axis=1) / count
        if name.startswith("seg_"):
            _, matrix, user_codes = self._segments[name.removeprefix("seg_")]
            codes = user_codes[users]
            return np.where(codes >= 0, matrix[codes, items], np.nan)
        if name.startswith("diff_"):
            item_values, user_taste = self._taste[name.removeprefix("diff_")]
            return item_values[items] - user_taste[users]
        if name.startswith("recent_sim_"):
            return self._recent_similarity(users, items, name.removeprefix("recent_sim_"))
        raise KeyError(f"unknown feature {name!r}")

    def _recent_similarity(self, users: np.ndarray, items: np.ndarray, how: str) -> np.ndarray:
        recent = self._recent[users]  # (pairs, width)
        valid = recent >= 0
        sims = np.einsum("pd,pwd->pw", self._vectors[items], self._vectors[np.where(valid, recent, 0)])
        if how == "max":
            return np.where(valid, sims, -1.0).max(axis=1).astype(np.float32)
        count = np.maximum(valid.sum(axis=1), 1)
        return (np.where(valid, sims, 0.0).sum(axis=1) / count).astype(np.float32)

    # -- cold start -----------------------------------------------------
    def segment_scores(self, attributes: dict[str, object]) -> tuple[np.ndarray, list[str]] | None:
        """Item scores from the segments a new user's attributes fall into.

        Returns ``None`` when no given attribute matches a known segment.
        """
        total = np.zeros(len(self.item_ids), dtype=np.float32)
        used = []
        buckets = self.info.get("buckets", {})
        for attribute, raw in attributes.items():
            if attribute not in self._segments or raw is None:
                continue
            value = bucket_label(float(raw), buckets[attribute]) if attribute in buckets else str(raw)
            code, matrix, _ = self._segments[attribute]
            if value in code:
                total += matrix[code[value]]
                used.append(f"{attribute}={raw}")
        return (total, used) if used else None

    def segment_attributes(self) -> list[str]:
        """User attributes that can steer the cold-start fallback."""
        return list(self._segments)


@dataclass
class _RowPlan:
    """Where each block of a ranker row comes from (see :meth:`FeatureView._plan`)."""

    item_cols: list[int]
    item_block: np.ndarray
    user_cols: list[int]
    user_block: np.ndarray
    pair_cols: list[tuple[int, str]]
    item_cat_cols: list[int]
    item_cat_block: np.ndarray
    user_cat_cols: list[int]
    user_cat_block: np.ndarray


def _stack(columns: list[np.ndarray], rows: int, dtype: type) -> np.ndarray:
    if not columns:
        return np.empty((rows, 0), dtype=dtype)
    return np.ascontiguousarray(np.column_stack(columns).astype(dtype, copy=False))


def _categories(column: pd.Series) -> np.ndarray:
    return column.map(lambda v: UNKNOWN if v is None or v != v else str(v)).to_numpy(dtype=object)


def _with_unknown(values: np.ndarray, fill: object) -> np.ndarray:
    """Append the row that index -1 reads for unknown users."""
    return np.concatenate([values, np.array([fill], dtype=values.dtype)])


def _item_value_matrix(column: pd.Series, kind: str, values: list[str]) -> np.ndarray:
    index = {v: j for j, v in enumerate(values)}
    matrix = np.zeros((len(column), len(values)), dtype=np.float32)
    for i, cell in enumerate(column.to_numpy()):
        cells = cell if kind == "list" and isinstance(cell, tuple) else (cell,)
        for value in cells:
            j = index.get(str(value)) if value is not None else None
            if j is not None:
                matrix[i, j] = 1.0
    return matrix
