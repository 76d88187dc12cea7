"""How much of a user's weight went to items sharing a candidate's attribute values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import MAX_AFFINITY_VALUES, Column, ComputeContext, FeatureFamily, Pairs
from features.schema import Columns


class Affinity(FeatureFamily):
    """``aff_<attr>`` (mean share over the candidate's values) and ``aff_<attr>_max``, per non-numeric attribute."""

    name = "affinity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        parts = []
        for attribute, kind in data.item_kinds.items():
            if kind == "numeric":
                continue
            pairs = _exploded(data.items, attribute, kind)
            joined = inter[[Columns.user, Columns.item, Columns.weight]].merge(pairs, on=Columns.item)
            weight = joined.groupby([Columns.user, "value"])[Columns.weight].sum()
            total = inter.groupby(Columns.user)[Columns.weight].sum()
            share = (weight / total.reindex(weight.index.get_level_values(0)).to_numpy()).rename("share")
            frame = share.reset_index()
            frame.insert(1, "attribute", attribute)
            parts.append(frame)
        if not parts:
            data.affinity = pd.DataFrame({Columns.user: [], "attribute": [], "value": [], "share": []})
            return
        out = pd.concat(parts, ignore_index=True)
        out["share"] = out["share"].astype(np.float32)
        data.affinity = out

    def columns(self) -> list[Column]:
        out = []
        affinity = self.view.tables.affinity
        for attribute, kind in self.view.item_kinds.items():
            if kind == "numeric":
                continue
            values, onehot = self.view.item_values(attribute)
            share = affinity[affinity["attribute"] == attribute]
            user_share = np.zeros((self.view.n_users + 1, len(values)), dtype=np.float32)
            rows = share[Columns.user].map(self.view.user_row).to_numpy()
            cols = np.searchsorted(values, share["value"].to_numpy())
            user_share[rows, cols] = share["share"].to_numpy(dtype=np.float32)
            out.append(Column(f"aff_{attribute}", "pair", compute=_mean_share(user_share, onehot)))
            out.append(Column(f"aff_{attribute}_max", "pair", compute=_max_share(user_share, onehot)))
        return out


def _mean_share(user_share: np.ndarray, onehot: np.ndarray):
    def compute(pairs: Pairs) -> np.ndarray:
        product = user_share[pairs.user_rows] * onehot[pairs.items]
        count = np.maximum(onehot[pairs.items].sum(axis=1), 1.0)
        return product.sum(axis=1) / count

    return compute


def _max_share(user_share: np.ndarray, onehot: np.ndarray):
    def compute(pairs: Pairs) -> np.ndarray:
        product = user_share[pairs.user_rows] * onehot[pairs.items]
        return product.max(axis=1) if product.shape[1] else np.zeros(len(pairs.items), np.float32)

    return compute


def _exploded(items: pd.DataFrame, attribute: str, kind: str) -> pd.DataFrame:
    """(item_id, value) pairs for a list or categorical item attribute (the most common values)."""
    column = items[attribute]
    if kind == "categorical":
        column = column.map(lambda v: () if v is None or v != v else (v,))
    else:
        column = column.map(lambda v: v if isinstance(v, tuple) else ())
    pairs = column.explode().dropna()
    frame = pd.DataFrame({Columns.item: pairs.index.to_numpy(), "value": pairs.astype(str).to_numpy()})
    top = frame["value"].value_counts().index[:MAX_AFFINITY_VALUES]
    return frame[frame["value"].isin(top)]
