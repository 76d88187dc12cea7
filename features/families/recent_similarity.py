"""How close a candidate is to the items the user took last (cosine of ALS item factors)."""

from __future__ import annotations

import itertools
from functools import cached_property

import numpy as np
import pandas as pd

from features.families.base import (
    Column,
    ComputeContext,
    FeatureFamily,
    FreshUsers,
    PairCompute,
    Pairs,
    user_state,
)
from features.schema import DAY, Columns

RECENT_ITEMS = 10  # a user's latest items, for "similar to what they just watched"
SIMILAR = 0.5  # cosine of ALS item factors above which two items count as similar


class RecentSimilarity(FeatureFamily):
    """Similarity of the candidate to the user's latest items, and how long ago they took a similar one.

    ``recent_sim_max``/``recent_sim_mean`` over the latest items;
    ``days_since_similar``: days since the newest of them with cosine at least
    :data:`SIMILAR` (NaN: none). Needs item vectors (the ALS item factors).
    """

    name = "recent_similarity"

    @staticmethod
    def compute(data: ComputeContext) -> None:
        # Each user's RECENT_ITEMS latest rows: newest first, then by item id descending, full ties in the
        # table's order. Found on codes (ComputeContext.user_codes): sorting the table itself and counting by id
        # took 1.8 GB at 20M interactions.
        users, items = data.user_codes[0], data.item_codes[0]
        order = np.lexsort((-items, -data.interactions[Columns.timestamp].to_numpy(), users))  # stable
        owners = users[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))  # newest 0
        latest = data.interactions.iloc[order[rank < RECENT_ITEMS]]
        by_user = latest.assign(days_ago=(data.as_of - latest[Columns.timestamp]) / DAY).groupby(
            Columns.user, sort=True
        )
        data.users["recent_items"] = by_user[Columns.item].agg(tuple)
        data.users["recent_days_ago"] = by_user["days_ago"].agg(tuple)

    def columns(self) -> list[Column]:
        view = self.view
        if view.item_vectors is None:
            return []
        norms = np.linalg.norm(view.item_vectors, axis=1, keepdims=True)
        vectors = (view.item_vectors / np.maximum(norms, 1e-9)).astype(np.float32)
        latest, days_ago = self.latest
        return [
            Column(name, "pair", compute=_column(vectors, latest, days_ago, position))
            for position, name in enumerate(("recent_sim_max", "recent_sim_mean", "days_since_similar"))
        ]

    @cached_property
    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """Each snapshot user's latest items (model indices, newest first, -1 pads) and how many days ago."""
        view = self.view
        users = view.users
        # Users known only from the users file have no latest items (NaN in the table).
        recent = [r if isinstance(r, tuple) else () for r in users.get("recent_items", pd.Series([()] * len(users)))]
        ages = [a if isinstance(a, tuple) else () for a in users.get("recent_days_ago", pd.Series([()] * len(users)))]
        latest = np.full((view.n_users + 1, RECENT_ITEMS), -1, dtype=np.int64)
        days_ago = np.full((view.n_users + 1, RECENT_ITEMS), np.nan, dtype=np.float32)
        # Flattened, in one pass (a loop per user was among the largest parts of a worker's start at 138k
        # users, profiled): items the catalogue lacks are skipped, the first RECENT_ITEMS found of each user
        # kept, in order.
        lengths = np.fromiter(map(len, recent), dtype=np.int64, count=len(recent))
        if lengths.tolist() != [len(a) for a in ages]:
            raise ValueError("recent_items and recent_days_ago differ in length for some user")
        positions = pd.Index(view.item_ids, dtype=object).get_indexer(
            pd.Index(list(itertools.chain.from_iterable(recent)), dtype=object)
        )
        flat_ages = np.fromiter(itertools.chain.from_iterable(ages), dtype=np.float64, count=len(positions))
        rows = np.repeat(np.arange(len(recent)), lengths)
        found = positions >= 0
        found_so_far = np.cumsum(found)
        found_before_row = np.concatenate([[0], found_so_far])[np.cumsum(lengths) - lengths]
        slot = found_so_far - 1 - found_before_row[rows]
        keep = found & (slot < RECENT_ITEMS)
        latest[rows[keep], slot[keep]] = positions[keep]
        days_ago[rows[keep], slot[keep]] = flat_ages[keep]
        return latest, days_ago

    def fresh(self, users: FreshUsers) -> None:
        """The request's items in front of the snapshot's latest ones, the newest :data:`RECENT_ITEMS` kept."""
        if self.view.item_vectors is None:
            return
        latest, days_ago = self.latest
        # Pads as the snapshot's own: -1 items, NaN ages.
        items = np.full((len(users.rows), RECENT_ITEMS), -1, dtype=np.int64)
        ages = np.full((len(users.rows), RECENT_ITEMS), np.nan, dtype=np.float32)
        for slot, row in users.each():
            # The request's items (newest first), then the snapshot's latest (its real ones come first).
            kept = min(len(users.items[slot]), RECENT_ITEMS)
            items[slot, :kept], ages[slot, :kept] = users.items[slot][:kept], users.days_ago[slot][:kept]
            rest = RECENT_ITEMS - kept
            items[slot, kept:], ages[slot, kept:] = latest[row, :rest], days_ago[row, :rest]
        users.state[LATEST], users.state[DAYS_AGO] = items, ages


LATEST, DAYS_AGO = "recent_latest", "recent_days_ago"


def _column(vectors: np.ndarray, latest: np.ndarray, days_ago: np.ndarray, position: int) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        return _similarity_columns(vectors, latest, days_ago, pairs)[position]

    return compute


def _similarity_columns(
    vectors: np.ndarray, latest: np.ndarray, days_ago: np.ndarray, pairs: Pairs
) -> tuple[np.ndarray, ...]:
    """``recent_sim_max``, ``recent_sim_mean`` and ``days_since_similar`` of every pair, computed together once per
    set of pairs (the three columns read one matrix of cosines).

    The cosines take one matrix product per run of pairs with the same latest items (a user's candidates come
    together). A lone request is one run: its latest items are one row, read as that row rather than copied out
    for every pair (about a third of the numpy work). Both ways give the same values, bit for bit.
    """
    key = "recent_similarity"
    if key not in pairs.scratch:
        recent, ages = user_state(latest, pairs, LATEST), user_state(days_ago, pairs, DAYS_AGO)
        pairs.scratch[key] = _columns_of(vectors, recent, ages, pairs.items, pairs.owner_changes)
    return pairs.scratch[key]


def _columns_of(
    vectors: np.ndarray, recent: np.ndarray, ages: np.ndarray, items: np.ndarray, changes: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The three columns from each pair's latest items and their ages ((pairs, width), newest first), or from one
    owner's ((width,)), ``changes`` where a new run of pairs starts."""
    valid = recent >= 0
    sims = np.empty((len(items), RECENT_ITEMS), dtype=np.float32)
    if len(items):
        candidates = vectors[items]
        bounds = [0, *changes.tolist(), len(items)]
        for start, end in itertools.pairwise(bounds):
            owner = slice(None) if recent.ndim == 1 else start
            sims[start:end] = candidates[start:end] @ vectors[np.where(valid[owner], recent[owner], 0)].T
    full = bool(valid.all())  # every pair has RECENT_ITEMS latest items (most users): no masking needed
    largest = (sims if full else np.where(valid, sims, -1.0)).max(axis=1)  # float32 already
    count = np.maximum(valid.sum(axis=-1), 1)  # an int64 array, or one int64: the division runs in float64 either way
    mean = ((sims if full else np.where(valid, sims, 0.0)).sum(axis=1) / count).astype(np.float32)
    similar = sims >= SIMILAR if full else valid & (sims >= SIMILAR)
    first = similar.argmax(axis=1)  # the newest similar item (columns are newest first)
    newest = ages[first] if ages.ndim == 1 else np.take_along_axis(ages, first[:, None], axis=1)[:, 0]
    days = np.where(similar.any(axis=1), newest, np.nan).astype(np.float32, copy=False)
    return largest, mean, days
