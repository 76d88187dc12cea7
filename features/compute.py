"""Feature computation: interactions + attributes -> feature tables.

Training calls this on the data before its cut; the feature store is this
function's output on all the data, and serving reads that output. One
function, so training and serving cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import Columns, Dataset, _list_columns

RECENT_DAYS = 30
RECENT_ITEMS = 10  # a user's latest items, for "similar to what they just watched"
NUMERIC_BUCKETS = 5
MAX_SEGMENT_VALUES = 64  # user attributes with more values (zip codes) are not segments
MAX_AFFINITY_VALUES = 64  # item attribute values kept for user-item affinities
MAX_ONE_HOT_VALUES = 32  # list attributes small enough to become 0/1 item features
DAY = 86_400.0


@dataclass
class FeatureTables:
    """Everything the ranker reads, as plain tables (what the store persists).

    ``items``/``users`` are indexed by id. ``affinity`` is long-format
    ``(user_id, attribute, value, share)``: the share of the user's weight on
    items with that attribute value. ``segments`` is long-format
    ``(attribute, value, item_id, share)``: an item's share of the weight of
    users in a segment (a categorical or bucketed numeric user attribute),
    used as a feature and as the cold-start fallback.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    affinity: pd.DataFrame
    segments: pd.DataFrame
    info: dict = field(default_factory=dict)


def _column_kinds(table: pd.DataFrame | None, skip: set[str]) -> dict[str, str]:
    if table is None:
        return {}
    lists = set(_list_columns(table))
    kinds = {}
    for column in table.columns:
        if column in skip:
            continue
        if column in lists:
            kinds[column] = "list"
        elif pd.api.types.is_numeric_dtype(table[column]):
            kinds[column] = "numeric"
        else:
            kinds[column] = "categorical"
    return kinds


def bucket_edges(values: pd.Series) -> list[float]:
    """Quantile edges that turn a numeric user attribute into a segment."""
    clean = values.dropna().to_numpy(dtype=np.float64)
    if clean.size == 0:
        return []
    edges = np.unique(np.quantile(clean, np.linspace(0, 1, NUMERIC_BUCKETS + 1)[1:-1]))
    return [float(e) for e in edges]


def bucket_label(value: float | None, edges: list[float]) -> str | None:
    """The segment value of a numeric attribute: ``q0`` .. ``qN``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return f"q{int(np.searchsorted(edges, value, side='right'))}"


def compute_features(dataset: Dataset, recent_days: int = RECENT_DAYS) -> FeatureTables:
    """Compute item, user, affinity and segment tables from a dataset."""
    inter = dataset.interactions
    data_end = int(inter[Columns.timestamp].max())
    recent_from = data_end - recent_days * DAY
    item_kinds = _column_kinds(dataset.items, skip={Columns.title})
    user_kinds = _column_kinds(dataset.users, skip=set())

    by_item = inter.groupby(Columns.item, sort=True)
    items = pd.DataFrame(
        {
            "pop_all": by_item.size().astype(np.float32),
            "pop_recent": inter[inter[Columns.timestamp] >= recent_from]
            .groupby(Columns.item)
            .size()
            .astype(np.float32),
            "mean_weight": by_item[Columns.weight].mean().astype(np.float32),
            "item_age_days": ((data_end - by_item[Columns.timestamp].min()) / DAY).astype(np.float32),
        }
    )
    items["pop_recent"] = items["pop_recent"].fillna(0).astype(np.float32)
    items.index.name = Columns.item
    if dataset.items is not None:
        items = items.join(dataset.items, how="left")
    if Columns.title not in items.columns:
        items[Columns.title] = None

    by_user = inter.groupby(Columns.user, sort=True)
    users = pd.DataFrame(
        {
            "activity": by_user.size().astype(np.float32),
            "user_mean_weight": by_user[Columns.weight].mean().astype(np.float32),
            "days_since_last": ((data_end - by_user[Columns.timestamp].max()) / DAY).astype(np.float32),
        }
    )
    users.index.name = Columns.user
    latest = inter.sort_values([Columns.timestamp, Columns.item], ascending=False, kind="stable")
    users["recent_items"] = latest.groupby(Columns.user, sort=True)[Columns.item].agg(
        lambda s: tuple(s.iloc[:RECENT_ITEMS])
    )
    for attribute, kind in item_kinds.items():
        if kind == "numeric":
            # The user's weighted mean of a numeric item attribute (their "taste" in release year).
            values = items[attribute].reindex(inter[Columns.item]).to_numpy(dtype=np.float64)
            known = ~np.isnan(values)
            w = inter[Columns.weight].to_numpy(dtype=np.float64) * known
            frame = pd.DataFrame({"u": inter[Columns.user].to_numpy(), "wv": np.nan_to_num(values) * w, "w": w})
            sums = frame.groupby("u", sort=True)[["wv", "w"]].sum()
            users[f"taste_{attribute}"] = (sums["wv"] / sums["w"].replace(0, np.nan)).astype(np.float32)
    if dataset.users is not None:
        users = users.join(dataset.users, how="left")

    affinity = _affinity(inter, items, item_kinds)
    buckets = {c: bucket_edges(users[c]) for c, k in user_kinds.items() if k == "numeric"}
    segments = _segments(inter, users, user_kinds, buckets)
    info = {
        "data_start": int(inter[Columns.timestamp].min()),
        "data_end": data_end,
        "recent_days": recent_days,
        "item_attributes": item_kinds,
        "user_attributes": user_kinds,
        "buckets": buckets,
    }
    return FeatureTables(items, users, affinity, segments, info)


def _exploded(items: pd.DataFrame, attribute: str, kind: str) -> pd.DataFrame:
    """(item_id, value) pairs for a list or categorical item attribute."""
    column = items[attribute]
    if kind == "categorical":
        column = column.map(lambda v: () if v is None or v != v else (v,))
    else:
        column = column.map(lambda v: v if isinstance(v, tuple) else ())
    pairs = column.explode().dropna()
    frame = pd.DataFrame({Columns.item: pairs.index.to_numpy(), "value": pairs.astype(str).to_numpy()})
    top = frame["value"].value_counts().index[:MAX_AFFINITY_VALUES]
    return frame[frame["value"].isin(top)]


def _affinity(inter: pd.DataFrame, items: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    parts = []
    for attribute, kind in kinds.items():
        if kind == "numeric":
            continue
        pairs = _exploded(items, attribute, kind)
        joined = inter[[Columns.user, Columns.item, Columns.weight]].merge(pairs, on=Columns.item)
        weight = joined.groupby([Columns.user, "value"])[Columns.weight].sum()
        total = inter.groupby(Columns.user)[Columns.weight].sum()
        share = (weight / total.reindex(weight.index.get_level_values(0)).to_numpy()).rename("share")
        frame = share.reset_index()
        frame.insert(1, "attribute", attribute)
        parts.append(frame)
    if not parts:
        return pd.DataFrame({Columns.user: [], "attribute": [], "value": [], "share": []})
    out = pd.concat(parts, ignore_index=True)
    out["share"] = out["share"].astype(np.float32)
    return out


def user_segment_values(users: pd.DataFrame, kinds: dict[str, str], buckets: dict) -> dict[str, pd.Series]:
    """Each segment attribute's value per user (numeric ones bucketed)."""
    values = {}
    for attribute, kind in kinds.items():
        if kind == "numeric":
            edges = buckets.get(attribute, [])
            values[attribute] = users[attribute].map(lambda v, e=edges: bucket_label(v, e))
        elif kind == "categorical":
            column = users[attribute]
            if column.nunique(dropna=True) <= MAX_SEGMENT_VALUES:
                values[attribute] = column
    return values


def _segments(inter: pd.DataFrame, users: pd.DataFrame, kinds: dict[str, str], buckets: dict) -> pd.DataFrame:
    parts = []
    for attribute, per_user in user_segment_values(users, kinds, buckets).items():
        joined = inter[[Columns.user, Columns.item, Columns.weight]].assign(
            value=per_user.reindex(inter[Columns.user]).to_numpy()
        )
        joined = joined.dropna(subset=["value"])
        weight = joined.groupby(["value", Columns.item])[Columns.weight].sum()
        total = joined.groupby("value")[Columns.weight].sum()
        share = (weight / total.reindex(weight.index.get_level_values(0)).to_numpy()).rename("share")
        frame = share.reset_index()
        frame.insert(0, "attribute", attribute)
        parts.append(frame)
    if not parts:
        return pd.DataFrame({"attribute": [], "value": [], Columns.item: [], "share": []})
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype(str)
    out["share"] = out["share"].astype(np.float32)
    return out
