"""How far a candidate's numeric attributes are from what the user usually takes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily, Pairs
from features.schema import Columns


class Taste(FeatureFamily):
    """``diff_<attr>``: the candidate's value minus the user's weighted mean (their "taste" in release year)."""

    name = "taste"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        for attribute, kind in data.item_kinds.items():
            if kind != "numeric":
                continue
            values = data.items[attribute].reindex(inter[Columns.item]).to_numpy(dtype=np.float64)
            known = ~np.isnan(values)
            w = inter[Columns.weight].to_numpy(dtype=np.float64) * known
            frame = pd.DataFrame({"u": inter[Columns.user].to_numpy(), "wv": np.nan_to_num(values) * w, "w": w})
            sums = frame.groupby("u", sort=True)[["wv", "w"]].sum()
            data.users[f"taste_{attribute}"] = (sums["wv"] / sums["w"].replace(0, np.nan)).astype(np.float32)

    def columns(self) -> list[Column]:
        return [
            Column(
                f"diff_{c}",
                "pair",
                compute=_difference(self.view.item_numbers(c), self.view.user_numbers(f"taste_{c}")),
            )
            for c, k in self.view.item_kinds.items()
            if k == "numeric" and f"taste_{c}" in self.view.users
        ]


def _difference(item_values: np.ndarray, user_taste: np.ndarray):
    def compute(pairs: Pairs) -> np.ndarray:
        return item_values[pairs.items] - user_taste[pairs.user_rows]

    return compute
