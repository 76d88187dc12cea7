"""Feature computation: interactions + attributes -> feature tables, as of a point in time.

Training calls this as of each cut (only interactions before the cut are
read, and every time feature is measured from the cut); the feature store is
its output on all the data, and serving reads that output. The features
themselves live in :mod:`features.families`; this runs them in order.
"""

from __future__ import annotations

from features.families import FAMILIES, ComputeContext, FeatureTables
from features.schema import Columns, Dataset

__all__ = ["FeatureTables", "compute_features"]


def compute_features(dataset: Dataset, as_of: int | None = None) -> FeatureTables:
    """Item, user, affinity and segment tables from the interactions before ``as_of``.

    Without ``as_of`` every interaction is used and times are measured from
    just after the last one (the snapshot that serving reads).
    """
    interactions = dataset.interactions
    if as_of is None:
        as_of = int(interactions[Columns.timestamp].max()) + 1  # just after the last, as the candidate stage counts
    else:  # (all of them otherwise: no copy)
        interactions = interactions[interactions[Columns.timestamp] < as_of]
    data = ComputeContext(dataset, interactions, int(as_of))
    for family in FAMILIES:
        family.compute(data)
    data.info.update(
        {
            "data_start": int(interactions[Columns.timestamp].min()),
            "data_end": int(as_of),
            "item_attributes": data.item_kinds,
            "user_attributes": data.user_kinds,
        }
    )
    return data.tables()
