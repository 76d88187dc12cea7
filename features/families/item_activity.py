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
    """Interactions all time and in the last 1, 7 and 30 days, the trend, mean weight, age and last activity."""

    name = "item_activity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        times = inter[Columns.timestamp]
        by_item = inter.groupby(Columns.item, sort=True)
        items = pd.DataFrame({"pop_all": by_item.size().astype(np.float32)})
        for days in WINDOWS:
            recent = inter[times >= data.as_of - days * DAY].groupby(Columns.item).size()
            items[f"pop_{days}d"] = recent.reindex(items.index, fill_value=0).astype(np.float32)
        # This week against the month's weekly average: >1 rising, <1 fading.
        items["pop_trend"] = (items["pop_7d"] / np.maximum(items["pop_30d"] * 7 / 30, 1.0)).astype(np.float32)
        items["mean_weight"] = by_item[Columns.weight].mean().astype(np.float32)
        items["item_age_days"] = ((data.as_of - by_item[Columns.timestamp].min()) / DAY).astype(np.float32)
        items["item_days_since_last"] = ((data.as_of - by_item[Columns.timestamp].max()) / DAY).astype(np.float32)
        items.index.name = Columns.item
        data.items = items

    def columns(self) -> list[Column]:
        return [Column(c, "item", values=self.view.item_numbers(c)) for c in COLUMNS]
