"""How close a candidate is to the items the user took last (cosine of ALS item factors)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily, Pairs
from features.schema import Columns

RECENT_ITEMS = 10  # a user's latest items, for "similar to what they just watched"


class RecentSimilarity(FeatureFamily):
    """``recent_sim_max`` and ``recent_sim_mean`` over the user's latest items (needs item vectors)."""

    name = "recent_similarity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        latest = data.interactions.sort_values([Columns.timestamp, Columns.item], ascending=False, kind="stable")
        data.users["recent_items"] = latest.groupby(Columns.user, sort=True)[Columns.item].agg(
            lambda s: tuple(s.iloc[:RECENT_ITEMS])
        )

    def columns(self) -> list[Column]:
        view = self.view
        if view.item_vectors is None:
            return []
        norms = np.linalg.norm(view.item_vectors, axis=1, keepdims=True)
        vectors = (view.item_vectors / np.maximum(norms, 1e-9)).astype(np.float32)
        users = view.users
        recent = users["recent_items"] if "recent_items" in users else pd.Series([()] * len(users))
        width = max((len(r) for r in recent), default=0) or 1
        latest = np.full((view.n_users + 1, width), -1, dtype=np.int64)  # -1 pads
        for row, items in enumerate(recent):
            found = [view.item_position[i] for i in items if i in view.item_position]
            latest[row, : len(found)] = found
        return [
            Column("recent_sim_max", "pair", compute=_similarity(vectors, latest, "max")),
            Column("recent_sim_mean", "pair", compute=_similarity(vectors, latest, "mean")),
        ]


def _similarity(vectors: np.ndarray, latest: np.ndarray, how: str):
    def compute(pairs: Pairs) -> np.ndarray:
        recent = latest[pairs.user_rows]  # (pairs, width)
        valid = recent >= 0
        sims = np.einsum("pd,pwd->pw", vectors[pairs.items], vectors[np.where(valid, recent, 0)])
        if how == "max":
            return np.where(valid, sims, -1.0).max(axis=1).astype(np.float32)
        count = np.maximum(valid.sum(axis=1), 1)
        return (np.where(valid, sims, 0.0).sum(axis=1) / count).astype(np.float32)

    return compute
