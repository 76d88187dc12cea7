"""Small multi-valued item attributes (genres) as one 0/1 column per value."""

from __future__ import annotations

from features.families.base import Column, FeatureFamily

MAX_ONE_HOT_VALUES = 32  # list attributes with more values only feed the affinities


class ListOneHot(FeatureFamily):
    """``<attribute>=<value>`` for each value of a list attribute with few values."""

    name = "list_one_hot"

    def columns(self) -> list[Column]:
        out = []
        for attribute, kind in self.view.item_kinds.items():
            if kind != "list":
                continue
            values, matrix = self.view.item_values(attribute)
            if len(values) <= MAX_ONE_HOT_VALUES:
                out += [Column(f"{attribute}={value}", "item", values=matrix[:, j]) for j, value in enumerate(values)]
        return out
