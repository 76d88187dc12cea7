"""How much and how recently a user takes items."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import DAY, Column, ComputeContext, FeatureFamily
from features.schema import Columns

COLUMNS = ("activity", "user_mean_weight", "days_since_last")


class UserActivity(FeatureFamily):
    """Interaction count, mean weight and days since the user's last interaction."""

    name = "user_activity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        by_user = data.interactions.groupby(Columns.user, sort=True)
        users = pd.DataFrame(
            {
                "activity": by_user.size().astype(np.float32),
                "user_mean_weight": by_user[Columns.weight].mean().astype(np.float32),
                "days_since_last": ((data.as_of - by_user[Columns.timestamp].max()) / DAY).astype(np.float32),
            }
        )
        users.index.name = Columns.user
        data.users = users

    def columns(self) -> list[Column]:
        return [Column(c, "user", values=self.view.user_numbers(c)) for c in COLUMNS]
