"""How much of a user's weight went to items sharing a candidate's attribute values."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from features.families.base import (
    MAX_AFFINITY_VALUES,
    Column,
    ComputeContext,
    FeatureFamily,
    FreshUsers,
    PairCompute,
    Pairs,
    ViewContext,
    user_state,
    zero_nan,
)
from features.schema import Columns


class Affinity(FeatureFamily):
    """``aff_<attr>`` (mean share over the candidate's values) and ``aff_<attr>_max``, per non-numeric attribute."""

    name = "affinity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        # Codes, not ids (ComputeContext.user_codes); sorted like the ids, so the groups' order is theirs.
        (users, user_ids), (items, item_ids) = data.user_codes, data.item_codes
        weights = pd.Series(data.interactions[Columns.weight].to_numpy())
        total = weights.groupby(users).sum()
        parts = []
        for attribute, kind in data.item_kinds.items():
            if kind == "numeric":
                continue
            pairs = _exploded(data.items, attribute, kind)
            pair_items = item_ids.get_indexer(pairs[Columns.item])
            # One value at a time, over the rows of the items that have it: joined to every value of their item
            # at once, the interactions were 1.9 GB at 20M. A user's weight on a value sums the same rows in
            # the same order either way (each item has a value once), so the shares are the same to the bit.
            found = []
            for value in sorted(pairs["value"].unique()):
                has = np.zeros(len(item_ids), dtype=bool)
                has[pair_items[(pairs["value"] == value).to_numpy() & (pair_items >= 0)]] = True
                rows = has[items]
                sums = weights[rows].groupby(users[rows]).sum()
                found.append(pd.DataFrame({"code": sums.index, "value": value, "weight": sums.to_numpy()}))
            if not found:
                continue
            frame = pd.concat(found, ignore_index=True).sort_values("code", kind="stable", ignore_index=True)
            share = frame["weight"] / total.reindex(frame["code"]).to_numpy()
            frame = pd.DataFrame(
                {
                    Columns.user: user_ids[frame["code"].to_numpy()],
                    "attribute": attribute,
                    "value": frame["value"],
                    "share": share,
                }
            )
            parts.append(frame)
        if not parts:
            data.affinity = pd.DataFrame({Columns.user: [], "attribute": [], "value": [], "share": []})
            return
        out = pd.concat(parts, ignore_index=True)
        out["share"] = out["share"].astype(np.float32)
        data.affinity = out

    def __init__(self, view: ViewContext) -> None:
        super().__init__(view)
        # attribute -> (users x values share matrix with the unknown-user row, items x values 0/1 matrix)
        self.shares: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        affinity = view.tables.affinity
        for attribute, kind in view.item_kinds.items():
            if kind == "numeric":
                continue
            values, onehot = view.item_values(attribute)
            share = affinity[affinity["attribute"] == attribute]
            user_share = np.zeros((view.n_users + 1, len(values)), dtype=np.float32)
            rows = share[Columns.user].map(view.user_row).to_numpy(dtype=np.int64)  # (none: an empty int array)
            cols = np.searchsorted(values, share["value"].to_numpy())
            user_share[rows, cols] = share["share"].to_numpy(dtype=np.float32)
            self.shares[attribute] = (user_share, onehot)

    def columns(self) -> list[Column]:
        out = []
        for attribute, (user_share, onehot) in self.shares.items():
            key = _key(attribute)
            counts = np.maximum(onehot.sum(axis=1), 1.0)  # each item's number of values (at least 1), summed once
            out.append(Column(f"aff_{attribute}", "pair", compute=_mean_share(user_share, onehot, counts, key)))
            out.append(Column(f"aff_{attribute}_max", "pair", compute=_max_share(user_share, onehot, counts, key)))
        return out

    def fresh(self, users: FreshUsers) -> None:
        """Shares re-weighted with the recent items: (share x total weight + recent weight on the value) / new total."""
        if not self.shares:
            return
        for attribute, (user_share, onehot) in self.shares.items():
            shares = np.empty((len(users.rows), onehot.shape[1]), dtype=np.float32)
            for slot, row in users.each():  # per user: see FreshUsers.each
                weights, total = users.weights[slot], self._total_weight[row]
                added = weights @ onehot[users.items[slot]]
                shares[slot] = (user_share[row] * total + added) / max(total + weights.sum(), 1e-9)
            users.state[_key(attribute)] = shares

    @cached_property
    def _total_weight(self) -> np.ndarray:
        """Each user's summed weight in the snapshot (0 for the unknown-user row), which the shares divide."""
        view = self.view
        return zero_nan(view.user_numbers("activity")) * zero_nan(view.user_numbers("user_mean_weight"))


def _key(attribute: str) -> str:
    return f"affinity_share_{attribute}"


def _shares(
    user_share: np.ndarray, onehot: np.ndarray, counts: np.ndarray, key: str, pairs: Pairs
) -> tuple[np.ndarray, ...]:
    """Per pair, the mean and the largest of the user's shares of the candidate's values (computed once)."""
    cached = f"{key}_by_pair"
    if cached not in pairs.scratch:
        values = onehot[pairs.items]
        product = user_state(user_share, pairs, key) * values
        mean = product.sum(axis=1) / counts[pairs.items]
        largest = product.max(axis=1) if product.shape[1] else np.zeros(len(pairs.items), np.float32)
        pairs.scratch[cached] = (mean, largest)  # two numbers a pair, not the pairs x values products
    return pairs.scratch[cached]


def _mean_share(user_share: np.ndarray, onehot: np.ndarray, counts: np.ndarray, key: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        return _shares(user_share, onehot, counts, key, pairs)[0]

    return compute


def _max_share(user_share: np.ndarray, onehot: np.ndarray, counts: np.ndarray, key: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        return _shares(user_share, onehot, counts, key, pairs)[1]

    return compute


def _exploded(items: pd.DataFrame, attribute: str, kind: str) -> pd.DataFrame:
    """(item_id, value) pairs for a list or categorical item attribute (the most common values)."""
    column = items[attribute]
    if kind == "categorical":
        column = column.map(lambda v: () if v is None or v != v else (v,))
    else:
        column = column.map(lambda v: v if isinstance(v, tuple) else ())
    pairs = column.explode().dropna()
    # An item has a value or not: a list repeating one ("Drama|Drama") counted its weight twice before
    # session 47 (a share above 1), where serving (item_values, fresh) counts it once.
    frame = pd.DataFrame({Columns.item: pairs.index.to_numpy(), "value": pairs.astype(str).to_numpy()})
    frame = frame.drop_duplicates(ignore_index=True)
    top = frame["value"].value_counts().index[:MAX_AFFINITY_VALUES]
    return frame[frame["value"].isin(top)]
