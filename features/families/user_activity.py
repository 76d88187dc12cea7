"""How much and how recently a user takes items."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily, FreshUsers, ViewContext, zero_nan_value
from features.schema import DAY, Columns

COLUMNS = ("activity", "activity_30d", "user_mean_weight", "days_since_last")
RECENT_DAYS = 30
REQUEST_ITEMS = "request_items"
NAN = float("nan")


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
        state = {key: np.empty(len(users.rows), dtype=np.float32) for key in (REQUEST_ITEMS, *COLUMNS)}
        for slot, row in users.each():
            before = {c: float(values[row]) for c, values in self.values.items()}
            activity, count = zero_nan_value(before["activity"]), len(users.items[slot])
            days = users.days_ago[slot].tolist()
            total_weight = activity * zero_nan_value(before["user_mean_weight"]) + sum(users.weights[slot].tolist())
            state[REQUEST_ITEMS][slot] = count
            state["activity"][slot] = activity + count
            state["activity_30d"][slot] = zero_nan_value(before["activity_30d"]) + sum(d <= RECENT_DAYS for d in days)
            state["user_mean_weight"][slot] = total_weight / max(activity + count, 1)
            # The newest of the snapshot's last interaction (NaN: it never saw the user) and the request's.
            state["days_since_last"][slot] = min((d for d in (before["days_since_last"], *days) if d == d), default=NAN)
        users.state.update(state)
