"""The user attributes file, as features: numeric ones as numbers, the rest as categories."""

from __future__ import annotations

import math
from typing import TypeGuard

from features.families.base import (
    UNKNOWN,
    Column,
    ComputeContext,
    FeatureFamily,
    FreshUsers,
    ViewContext,
    categories,
    with_unknown,
)


class UserAttributes(FeatureFamily):
    """Numeric user attributes (``age``) and categorical ones (``cat_<name>``); unknown users get NaN / unknown."""

    name = "user_attributes"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        if data.dataset.users is not None:
            # Users in the file without interactions are kept: their attributes steer their cold start.
            data.users = data.users.join(data.dataset.users, how="outer")

    def __init__(self, view: ViewContext) -> None:
        super().__init__(view)
        kinds = view.user_kinds
        self.numeric = {c: view.user_numbers(c) for c, k in kinds.items() if k == "numeric"}
        self.categorical = {
            c: with_unknown(categories(view.users[c]), UNKNOWN) for c, k in kinds.items() if k == "categorical"
        }

    def columns(self) -> list[Column]:
        return [
            *(Column(c, "user", values=values) for c, values in self.numeric.items()),
            *(Column(f"cat_{c}", "user", values=values, categorical=True) for c, values in self.categorical.items()),
        ]

    def fresh(self, users: FreshUsers) -> None:
        """Attributes the request gives replace the users file's (as in the cold start)."""
        if not any(users.attributes):
            return
        for column, values in self.numeric.items():
            fresh = values[users.rows].copy()
            for slot, attributes in enumerate(users.attributes):
                value = attributes.get(column)
                if _is_number(value):
                    fresh[slot] = float(value)
            users.state[column] = fresh
        for column, values in self.categorical.items():
            fresh = values[users.rows].copy()
            for slot, attributes in enumerate(users.attributes):
                if attributes.get(column) is not None:
                    fresh[slot] = str(attributes[column])
            users.state[f"cat_{column}"] = fresh


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
