"""How much and how recently a user takes items."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily, FreshUsers, ViewContext, zero_nan
from features.schema import DAY, Columns

COLUMNS = ("activity", "activity_30d", "user_mean_weight", "days_since_last")
RECENT_DAYS = 30
REQUEST_ITEMS = "request_items"


class UserActivity(FeatureFamily):
    """Interaction count (all time and last 30 days), mean weight and days since the user's last interaction."""

    name = "user_activity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        inter = data.interactions
        by_user = inter.groupby(Columns.user, sort=True)
        recent = inter[inter[Columns.timestamp] >= data.as_of - RECENT_DAYS * DAY].groupby(Columns.user).size()
        users = pd.DataFrame(
            {
                "activity": by_user.size().astype(np.float32),
                "activity_30d": recent.reindex(by_user.size().index, fill_value=0).astype(np.float32),
                "user_mean_weight": by_user[Columns.weight].mean().astype(np.float32),
                "days_since_last": ((data.as_of - by_user[Columns.timestamp].max()) / DAY).astype(np.float32),
            }
        )
        users.index.name = Columns.user
        data.users = users

    def __init__(self, view: ViewContext) -> None:
        super().__init__(view)
        self.values = {c: view.user_numbers(c) for c in COLUMNS}

    def columns(self) -> list[Column]:
        # How many interactions the request itself brought (0 in every snapshot): lets the ranker tell a
        # user featured with fresh items from one featured as of the snapshot.
        none = np.zeros(self.view.n_users + 1, dtype=np.float32)
        return [
            *(Column(c, "user", values=self.values[c]) for c in COLUMNS),
            Column(REQUEST_ITEMS, "user", values=none),
        ]

    def fresh(self, users: FreshUsers) -> None:
        base = {c: v[users.rows] for c, v in self.values.items()}
        before = zero_nan(base["activity"])
        count = users.valid.sum(axis=1)
        activity = before + count
        total_weight = before * zero_nan(base["user_mean_weight"]) + users.weights.sum(axis=1)
        ages = users.days_ago  # NaN pads, which fmin passes over
        newest = np.fmin.reduce(ages, axis=1) if ages.shape[1] else np.full(len(ages), np.nan)
        users.state.update(
            {
                REQUEST_ITEMS: count.astype(np.float32),
                "activity": activity.astype(np.float32),
                "activity_30d": (
                    zero_nan(base["activity_30d"]) + (users.valid & (users.days_ago <= RECENT_DAYS)).sum(axis=1)
                ).astype(np.float32),
                "user_mean_weight": (total_weight / np.maximum(activity, 1)).astype(np.float32),
                "days_since_last": np.fmin(base["days_since_last"], newest).astype(np.float32),
            }
        )
