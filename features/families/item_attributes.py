"""The item attributes file, as features: numeric ones as numbers, the rest as categories."""

from __future__ import annotations

from features.families.base import Column, ComputeContext, FeatureFamily, categories
from features.schema import Columns


class ItemAttributes(FeatureFamily):
    """Numeric item attributes (``release_year``) and categorical ones (``cat_<name>``)."""

    name = "item_attributes"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        if data.dataset.items is not None:
            data.items = data.items.join(data.dataset.items, how="left")
        if Columns.title not in data.items.columns:
            data.items[Columns.title] = None

    def columns(self) -> list[Column]:
        kinds = self.view.item_kinds
        numeric = [Column(c, "item", values=self.view.item_numbers(c)) for c, k in kinds.items() if k == "numeric"]
        categorical = [
            Column(f"cat_{c}", "item", values=categories(self.view.items[c]), categorical=True)
            for c, k in kinds.items()
            if k == "categorical"
        ]
        return numeric + categorical
