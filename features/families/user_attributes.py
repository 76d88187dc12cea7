"""The user attributes file, as features: numeric ones as numbers, the rest as categories."""

from __future__ import annotations

from features.families.base import UNKNOWN, Column, ComputeContext, FeatureFamily, categories, with_unknown


class UserAttributes(FeatureFamily):
    """Numeric user attributes (``age``) and categorical ones (``cat_<name>``); unknown users get NaN / unknown."""

    name = "user_attributes"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        if data.dataset.users is not None:
            # Users in the file without interactions are kept: their attributes steer their cold start.
            data.users = data.users.join(data.dataset.users, how="outer")

    def columns(self) -> list[Column]:
        kinds = self.view.user_kinds
        numeric = [Column(c, "user", values=self.view.user_numbers(c)) for c, k in kinds.items() if k == "numeric"]
        categorical = [
            Column(f"cat_{c}", "user", values=with_unknown(categories(self.view.users[c]), UNKNOWN), categorical=True)
            for c, k in kinds.items()
            if k == "categorical"
        ]
        return numeric + categorical
