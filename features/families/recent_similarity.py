"""How close a candidate is to the items the user took last (cosine of ALS item factors)."""

from __future__ import annotations

import itertools
from functools import cached_property

import numpy as np
import pandas as pd

from features.families.base import Column, ComputeContext, FeatureFamily, FreshUsers, PairCompute, Pairs, user_state
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
        latest = data.interactions.sort_values([Columns.timestamp, Columns.item], ascending=False, kind="stable")
        latest = latest[latest.groupby(Columns.user, sort=False).cumcount() < RECENT_ITEMS]
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
            Column("recent_sim_max", "pair", compute=_similarity(vectors, latest, "max")),
            Column("recent_sim_mean", "pair", compute=_similarity(vectors, latest, "mean")),
            Column("days_since_similar", "pair", compute=_days_since_similar(vectors, latest, days_ago)),
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


def _similarities(vectors: np.ndarray, latest: np.ndarray, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each candidate to each of its user's latest items, computed once per set of pairs.

    One matrix product per run of pairs with the same latest items (a user's
    candidates come together): gathering the latest items' vectors for every
    pair and multiplying pair by pair moved ~200 KB per user and cost most of
    the ranker's feature rows.
    """
    if "recent_similarities" not in pairs.scratch:
        recent = user_state(latest, pairs, LATEST)  # (pairs, width), newest first
        valid = recent >= 0
        sims = np.empty(recent.shape, dtype=np.float32)
        if len(recent):
            candidates = vectors[pairs.items]
            changes = np.flatnonzero(_owner_changes(pairs)) + 1
            bounds = [0, *changes.tolist(), len(recent)]
            for start, end in itertools.pairwise(bounds):
                sims[start:end] = candidates[start:end] @ vectors[np.where(valid[start], recent[start], 0)].T
        pairs.scratch["recent_similarities"] = (sims, valid)
    return pairs.scratch["recent_similarities"]


def _owner_changes(pairs: Pairs) -> np.ndarray:
    """Where a pair's user differs from the previous pair's (a user: a snapshot row, or a request's fresh slot)."""
    changes = pairs.user_rows[1:] != pairs.user_rows[:-1]
    if pairs.fresh_slots is not None:
        changes |= pairs.fresh_slots[1:] != pairs.fresh_slots[:-1]
    return changes


def _days_since_similar(vectors: np.ndarray, latest: np.ndarray, days_ago: np.ndarray) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        sims, valid = _similarities(vectors, latest, pairs)
        similar = valid & (sims >= SIMILAR)
        first = similar.argmax(axis=1)  # the newest similar item (columns are newest first)
        ages = np.take_along_axis(user_state(days_ago, pairs, DAYS_AGO), first[:, None], axis=1)[:, 0]
        return np.where(similar.any(axis=1), ages, np.nan).astype(np.float32)

    return compute


def _similarity(vectors: np.ndarray, latest: np.ndarray, how: str) -> PairCompute:
    def compute(pairs: Pairs) -> np.ndarray:
        sims, valid = _similarities(vectors, latest, pairs)
        if how == "max":
            return np.where(valid, sims, -1.0).max(axis=1).astype(np.float32)
        count = np.maximum(valid.sum(axis=1), 1)
        return (np.where(valid, sims, 0.0).sum(axis=1) / count).astype(np.float32)

    return compute
