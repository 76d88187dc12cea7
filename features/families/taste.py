"""How far a candidate's numeric attributes are from what the user usually takes."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from features.families.base import (
    Column,
    ComputeContext,
    FeatureFamily,
    FreshUsers,
    PairCompute,
    Pairs,
    user_state,
    zero_nan,
)
from features.schema import Columns


class Taste(FeatureFamily):
    """``diff_<attr>``: the candidate's value minus the user's weighted mean (their "taste" in release year)."""

    name = "taste"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        (users, user_ids), (items, item_ids) = data.user_codes, data.item_codes
        for attribute, kind in data.item_kinds.items():
            if kind != "numeric":
                continue
            values = data.items[attribute].reindex(item_ids).to_numpy(dtype=np.float64)[items]
            known = ~np.isnan(values)
            w = inter[Columns.weight].to_numpy(dtype=np.float64) * known
            frame = pd.DataFrame({"u": users, "wv": np.nan_to_num(values) * w, "w": w})
            sums = frame.groupby("u", sort=True)[["wv", "w"]].sum()
            sums.index = user_ids[sums.index.to_numpy()]
            data.users[f"taste_{attribute}"] = (sums["wv"] / sums["w"].replace(0, np.nan)).astype(np.float32)
            # The weight behind the mean, so a request's recent items can be averaged in (see fresh).
            data.users[f"taste_weight_{attribute}"] = sums["w"].astype(np.float32)

    def attributes(self) -> list[str]:
        view = self.view
        return [c for c, k in view.item_kinds.items() if k == "numeric" and f"taste_{c}" in view.users]

    def columns(self) -> list[Column]:
        return [
            Column(
                f"diff_{c}",
                "pair",
                compute=_difference(self.view.item_numbers(c), self.view.user_numbers(f"taste_{c}"), f"taste_{c}"),
            )
            for c in self.attributes()
        ]

    @cached_property
    def _fresh_inputs(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Per attribute: every user's taste, the weight behind it, and the items' values (looked up once)."""
        view = self.view
        out = []
        for attribute in self.attributes():
            taste = view.user_numbers(f"taste_{attribute}")
            weight_column = f"taste_weight_{attribute}"
            # Snapshots written before the weight column: every interaction counted (exact when no value is missing).
            weight = (
                view.user_numbers(weight_column)
                if weight_column in view.users
                else view.user_numbers("activity") * view.user_numbers("user_mean_weight")
            )
            weight = np.where(np.isnan(taste), 0.0, zero_nan(weight))
            out.append((attribute, taste, weight, view.item_numbers(attribute)))
        return out

    def fresh(self, users: FreshUsers) -> None:
        """The weighted mean with the recent items' values added to the snapshot's sum (per user: see
        :meth:`FreshUsers.each`)."""
        for attribute, every_taste, every_weight, item_values in self._fresh_inputs:
            out = np.empty(len(users.rows), dtype=np.float32)
            for slot, row in users.each():
                values, weights = item_values[users.items[slot]].tolist(), users.weights[slot].tolist()
                # An item without the attribute (NaN) adds nothing.
                known = [(value, weight) for value, weight in zip(values, weights, strict=True) if value == value]
                taste, weight = float(every_taste[row]), float(every_weight[row])  # weight is 0 where taste is NaN
                total = weight + sum(w for _, w in known)
                summed = (taste if taste == taste else 0.0) * weight + sum(v * w for v, w in known)
                out[slot] = summed / max(total, 1e-9) if total > 0 else np.nan
            users.state[f"taste_{attribute}"] = out


def _difference(item_values: np.ndarray, user_taste: np.ndarray, key: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        return item_values[pairs.items] - user_state(user_taste, pairs, key)

    return compute
