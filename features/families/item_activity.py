"""How much and how recently an item is taken."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import DAY, Column, ComputeContext, FeatureFamily
from features.schema import Columns

COLUMNS = ("pop_all", "pop_recent", "mean_weight", "item_age_days")


class ItemActivity(FeatureFamily):
    """Interactions all time and in the recent window, mean weight, days since the first interaction."""

    name = "item_activity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        recent_from = data.as_of - data.recent_days * DAY
        by_item = inter.groupby(Columns.item, sort=True)
        items = pd.DataFrame(
            {
                "pop_all": by_item.size().astype(np.float32),
                "pop_recent": inter[inter[Columns.timestamp] >= recent_from]
                .groupby(Columns.item)
                .size()
                .astype(np.float32),
                "mean_weight": by_item[Columns.weight].mean().astype(np.float32),
                "item_age_days": ((data.as_of - by_item[Columns.timestamp].min()) / DAY).astype(np.float32),
            }
        )
        items["pop_recent"] = items["pop_recent"].fillna(0).astype(np.float32)
        items.index.name = Columns.item
        data.items = items

    def columns(self) -> list[Column]:
        return [Column(c, "item", values=self.view.item_numbers(c)) for c in COLUMNS]
