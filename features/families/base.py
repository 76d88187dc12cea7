"""What every feature family shares: the contexts it computes and gathers in, and its columns.

A family owns a few ranker features end to end: how they are computed from
interactions as of a time (:meth:`FeatureFamily.compute`, at training and
snapshot time) and how their values are gathered for (user, item) pairs
(:meth:`FeatureFamily.columns`, once per snapshot; the request path only
indexes the arrays they return).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from features.schema import Columns, Dataset, list_columns

UNKNOWN = "<unknown>"
MAX_AFFINITY_VALUES = 64  # item attribute values kept for user-item affinities and one-hot columns


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
    info: dict[str, Any] = field(default_factory=dict)


def column_kinds(table: pd.DataFrame | None, skip: set[str]) -> dict[str, str]:
    """``numeric``, ``categorical`` or ``list`` for each attribute column."""
    if table is None:
        return {}
    lists = set(list_columns(table))
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


@dataclass
class ComputeContext:
    """The data as of ``as_of`` and the tables the families fill in, in order.

    ``interactions`` holds only what happened before ``as_of``; every time
    feature is measured from ``as_of``, so a snapshot for time T reads
    nothing from T on.
    """

    dataset: Dataset
    interactions: pd.DataFrame
    as_of: int
    items: pd.DataFrame = field(default_factory=pd.DataFrame)
    users: pd.DataFrame = field(default_factory=pd.DataFrame)
    affinity: pd.DataFrame = field(default_factory=pd.DataFrame)
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)
    info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def item_kinds(self) -> dict[str, str]:
        return column_kinds(self.dataset.items, skip={Columns.title})

    @cached_property
    def user_kinds(self) -> dict[str, str]:
        return column_kinds(self.dataset.users, skip=set())

    @cached_property
    def user_codes(self) -> tuple[np.ndarray, pd.Index]:
        """Each interaction's user as a position in the sorted user ids, and those ids.

        Families group by these, not by the ids: the ids as a numpy array are a Python string per interaction
        (1.1 GB at 20M interactions, several times over in one stage's build). Sorted, so grouping by code
        orders the result as grouping by id did.
        """
        return pd.factorize(self.interactions[Columns.user], sort=True)

    @cached_property
    def item_codes(self) -> tuple[np.ndarray, pd.Index]:
        """Each interaction's item as a position in the sorted item ids, and those ids (see ``user_codes``)."""
        return pd.factorize(self.interactions[Columns.item], sort=True)

    def tables(self) -> FeatureTables:
        return FeatureTables(self.items, self.users, self.affinity, self.segments, self.info)


@dataclass
class FreshUsers:
    """Users as a request sees them: their snapshot row plus interactions the snapshot does not hold yet.

    One slot per such user. ``items`` (candidate model indices, newest first),
    ``days_ago`` (from the snapshot's as-of time, never negative) and
    ``weights`` describe each slot's recent interactions; ``attributes`` are the
    request's user attributes. Each family fills ``state`` with what its
    per-user arrays would hold for the slot had those interactions been in
    the snapshot (:meth:`FeatureFamily.fresh`); columns read it through
    :func:`user_state`.
    """

    rows: np.ndarray  # (slots,) snapshot row, -1: not in the snapshot
    items: list[np.ndarray]  # per slot, int64
    days_ago: list[np.ndarray]  # per slot, float32
    weights: list[np.ndarray]  # per slot, float32
    attributes: list[dict[str, object]]
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def each(self) -> Iterator[tuple[int, int]]:
        """Per user: slot and snapshot row, as Python ints.

        A request brings one fresh user or a few: the families' per-user sums run in plain Python over
        the user's own arrays, where a numpy call (2-7 us on these machines) costs more than one user's
        whole arithmetic; a lone user's fresh features take a third or less of the time vectorised code
        over padded matrices took (BENCHMARKS.md).
        """
        return enumerate(self.rows.tolist())


@dataclass(frozen=True)
class Pairs:
    """The (user, candidate) pairs a ranker scores: parallel arrays, one entry per pair.

    ``user_rows`` are snapshot rows (-1: unknown user), ``items`` candidate
    model indices; the rest comes from the candidate stage: the ALS score,
    the co-consumption score and each source's rank (NaN: not proposed).
    """

    user_rows: np.ndarray
    items: np.ndarray
    als_scores: np.ndarray
    cooc_scores: np.ndarray
    source_ranks: dict[str, np.ndarray]
    # Users with request-time history, and each pair's slot among them (-1: the snapshot row as it is).
    fresh: FreshUsers | None = None
    fresh_slots: np.ndarray | None = None
    # Intermediate results several columns share (one set of pairs, one request: no locking needed).
    scratch: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict, compare=False)
    # Set when the caller knows every pair is one user's (a lone request), so nobody compares the rows to find out.
    lone: bool = False

    @cached_property
    def owner_changes(self) -> np.ndarray:
        """Where a pair's user differs from the previous pair's (a user: a snapshot row, or a request's fresh slot);
        a user's candidates come together, so these start its run of pairs."""
        if self.lone:
            return np.empty(0, dtype=np.intp)
        changes = self.user_rows[1:] != self.user_rows[:-1]
        if self.fresh_slots is not None:
            changes |= self.fresh_slots[1:] != self.fresh_slots[:-1]
        return np.flatnonzero(changes) + 1

    @cached_property
    def one_owner(self) -> bool:
        """Whether every pair belongs to one user (a lone request): columns read that user's row once
        (:func:`user_state`) rather than a copy of it per pair."""
        return len(self.items) > 0 and not len(self.owner_changes)

    @cached_property
    def fresh_positions(self) -> np.ndarray:
        """Which pairs belong to a user with request-time history (worked out once, read by every column)."""
        if self.fresh_slots is None:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.fresh_slots >= 0)


def user_state(values: np.ndarray, pairs: Pairs, key: str) -> np.ndarray:
    """The rows of a per-user array the pairs read: the snapshot's, or the fresh one a family put under ``key``.

    One row per pair, except for pairs of one user (:attr:`Pairs.one_owner`, a lone request): then that user's
    row alone, which broadcasts against per-pair arrays, not a copy of it per pair.
    """
    fresh = pairs.fresh.state.get(key) if pairs.fresh is not None else None
    if fresh is None:
        return values[pairs.user_rows[0]] if pairs.one_owner else values[pairs.user_rows]
    assert pairs.fresh_slots is not None  # set together with ``fresh``
    if pairs.one_owner:
        slot = int(pairs.fresh_slots[0])
        return fresh[slot].astype(values.dtype, copy=False) if slot >= 0 else values[pairs.user_rows[0]]
    where = pairs.fresh_positions
    if len(where) == len(pairs.items):  # every pair's user is fresh: no snapshot row is read
        return fresh[pairs.fresh_slots].astype(values.dtype, copy=False)
    out = values[pairs.user_rows]
    out[where] = fresh[pairs.fresh_slots[where]]
    return out


PairCompute = Callable[[Pairs], np.ndarray]  # one column for every (user, candidate) pair of a request


@dataclass(frozen=True)
class Column:
    """One ranker feature and where its value comes from.

    ``item`` columns are an array over the catalogue, ``user`` columns an
    array over snapshot users plus the unknown-user row at -1; both are
    gathered by indexing. ``pair`` columns are computed per pair.
    """

    name: str
    scope: Literal["item", "user", "pair"]
    values: np.ndarray | None = None
    compute: PairCompute | None = None
    categorical: bool = False


class ViewContext:
    """A snapshot's tables aligned with the candidate model's items, for families to build columns from."""

    def __init__(self, tables: FeatureTables, item_ids: np.ndarray, item_vectors: np.ndarray | None) -> None:
        self.tables = tables
        self.info = tables.info
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.items = tables.items.reindex(self.item_ids)
        self.users = tables.users
        self.user_row = {uid: i for i, uid in enumerate(self.users.index)}
        self.n_users = len(self.users)
        self.item_vectors = item_vectors
        self.item_kinds: dict[str, str] = tables.info["item_attributes"]
        self.user_kinds: dict[str, str] = tables.info["user_attributes"]
        self._value_matrices: dict[str, tuple[list[str], np.ndarray]] = {}
        self._user_numbers: dict[str, np.ndarray] = {}
        self._item_numbers: dict[str, np.ndarray] = {}
        self._released = False  # see release_build_inputs

    def release_build_inputs(self) -> None:
        """Let go of what only building the families' columns reads, once they are built.

        The users' list columns (a user's latest items and their ages, as tuples: about 2.8M Python
        objects at 138k users, over 100 MB in every serving worker) are held as arrays by the family
        that reads them, and the long affinity and segment tables as matrices. Numeric and categorical
        user columns stay: families read them lazily, on the first request with recent items.
        """
        self.users = self.users.drop(columns=list_columns(self.users))
        empty = self.tables.affinity.iloc[:0], self.tables.segments.iloc[:0]
        self.tables = FeatureTables(self.tables.items, self.users, *empty, info=self.tables.info)
        self._released = True

    @cached_property
    def item_position(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.item_ids)}

    def item_values(self, attribute: str) -> tuple[list[str], np.ndarray]:
        """The values of a list or categorical item attribute and an items x values 0/1 matrix."""
        if attribute not in self._value_matrices:
            if self._released:
                raise RuntimeError(f"item values of {attribute!r} asked for after the view let its tables go")
            share = self.tables.affinity[self.tables.affinity["attribute"] == attribute]
            values = sorted(share["value"].unique())
            kind = self.item_kinds[attribute]
            self._value_matrices[attribute] = (values, _item_value_matrix(self.items[attribute], kind, values))
        return self._value_matrices[attribute]

    def user_numbers(self, column: str) -> np.ndarray:
        """A numeric users-table column as float32, with the unknown-user row (NaN) appended (built once)."""
        if column not in self._user_numbers:
            values = self.users[column].to_numpy(dtype=np.float32, na_value=np.nan)
            self._user_numbers[column] = with_unknown(values, np.nan)
        return self._user_numbers[column]

    def item_numbers(self, column: str) -> np.ndarray:
        """A numeric item attribute as float32 over the catalogue (built once)."""
        if column not in self._item_numbers:
            self._item_numbers[column] = self.items[column].to_numpy(dtype=np.float32, na_value=np.nan)
        return self._item_numbers[column]


class FeatureFamily:
    """A few related features: computed together from interactions, gathered together per pair.

    Subclasses set ``name`` and override :meth:`compute` (to add columns or
    tables to the context; the default adds nothing) and :meth:`columns`.
    """

    name: ClassVar[str]

    @staticmethod
    def compute(data: ComputeContext) -> None:
        """Add this family's columns or tables from ``data.interactions`` only (all before ``data.as_of``)."""

    def __init__(self, view: ViewContext) -> None:
        self.view = view

    def columns(self) -> list[Column]:
        raise NotImplementedError

    def fresh(self, users: FreshUsers) -> None:
        """Put into ``users.state`` this family's per-user values with the request's interactions added.

        Keys are user column names (their value replaces the snapshot's) or
        the keys this family's pair columns read with :func:`user_state`.
        Families whose features do not depend on the user add nothing.
        """


def zero_nan(values: np.ndarray) -> np.ndarray:
    """NaN as 0 (``np.nan_to_num`` without its per-call overhead, which shows on the request path)."""
    return np.where(values == values, values, 0.0)


def zero_nan_value(value: float) -> float:
    """:func:`zero_nan` of one number, in plain Python (a request's per-user loops: a numpy call costs more)."""
    return value if value == value else 0.0


def categories(column: pd.Series) -> np.ndarray:
    """A categorical column as strings, missing values as :data:`UNKNOWN`, one object per distinct value."""
    return one_object_per_value(column.map(lambda v: UNKNOWN if v is None or v != v else str(v)).to_numpy(dtype=object))


def one_object_per_value(values: np.ndarray) -> np.ndarray:
    """An object array whose equal values are one object: read from Arrow, every cell is an object of its own,
    and a users column of a few distinct values held one string per user (7 MB a column at 138k users, in
    every worker)."""
    shared: dict[object, object] = {}
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        try:
            out[i] = shared.setdefault((type(value), value), value)  # 1 and 1.0 stay apart: str() tells them apart
        except TypeError:  # unhashable: kept as it is
            out[i] = value
    return out


def with_unknown(values: np.ndarray, fill: object) -> np.ndarray:
    """Append the row that index -1 reads for unknown users."""
    return np.concatenate([values, np.array([fill], dtype=values.dtype)])


def _item_value_matrix(column: pd.Series, kind: str, values: list[str]) -> np.ndarray:
    index = {v: j for j, v in enumerate(values)}
    matrix = np.zeros((len(column), len(values)), dtype=np.float32)
    for i, cell in enumerate(column.to_numpy()):
        cells = cell if kind == "list" and isinstance(cell, tuple) else (cell,)
        for value in cells:
            j = index.get(str(value)) if value is not None else None
            if j is not None:
                matrix[i, j] = 1.0
    return matrix
