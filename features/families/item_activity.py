"""How much and how recently an item is taken, measured back from the snapshot's time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily
from features.schema import DAY, Columns

WINDOWS = (1, 7, 30)  # days
COLUMNS = (
    "pop_all",
    *(f"pop_{d}d" for d in WINDOWS),
    "pop_trend",
    "mean_weight",
    "item_age_days",
    "item_days_since_last",
)


class ItemActivity(FeatureFamily):
    """Popularity all time and in the last 1, 7 and 30 days, the trend, mean weight, age and last activity.

    Popularity is the item's share of the window's interactions, not a count:
    how busy a week was changes from one cut to the next (MovieLens-100K's
    weeks differ by several times), and the ranker learns from many cuts at
    once, so a count would mean something else at every cut.
    """

    name = "item_activity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        times = inter[Columns.timestamp]
        by_item = inter.groupby(Columns.item, sort=True)
        counts = {"all": by_item.size()}
        for days in WINDOWS:
            counts[f"{days}d"] = inter[times >= data.as_of - days * DAY].groupby(Columns.item).size()
        counts = {w: c.reindex(counts["all"].index, fill_value=0).astype(np.float64) for w, c in counts.items()}
        items = pd.DataFrame({f"pop_{w}": (c / max(c.sum(), 1.0)).astype(np.float32) for w, c in counts.items()})
        # This week against the month's weekly average: >1 rising, <1 fading.
        items["pop_trend"] = (counts["7d"] / np.maximum(counts["30d"] * 7 / 30, 1.0)).astype(np.float32)
        items["mean_weight"] = by_item[Columns.weight].mean().astype(np.float32)
        items["item_age_days"] = ((data.as_of - by_item[Columns.timestamp].min()) / DAY).astype(np.float32)
        items["item_days_since_last"] = ((data.as_of - by_item[Columns.timestamp].max()) / DAY).astype(np.float32)
        items.index.name = Columns.item
        data.items = items

    def columns(self) -> list[Column]:
        return [Column(c, "item", values=self.view.item_numbers(c)) for c in COLUMNS]
