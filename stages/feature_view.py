"""Feature tables turned into arrays aligned with the candidate model's items.

Built once per snapshot (at start-up, on refresh, once per training step)
by composing the feature families; on the request path the ranker's rows are
assembled with numpy indexing only. Training and serving both go through
:meth:`FeatureView.rows`, so the features the ranker learns from are the
features it is served.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from features.families import FAMILIES, Column, FeatureTables, FreshUsers, Pairs, Segments, ViewContext
from features.schema import Columns
from stages.rules import Catalogue


@dataclass(frozen=True)
class FeatureNames:
    """The ranker's input columns: numeric ones first, then categorical."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class FeatureView:
    """Every family's columns for one feature snapshot.

    ``item_ids`` fixes the item order (the candidate model's); users are
    looked up by id, and row ``-1`` (the last) means "unknown user".
    """

    def __init__(
        self,
        tables: FeatureTables,
        item_ids: np.ndarray,
        item_vectors: np.ndarray | None = None,
        version: str = "",
    ) -> None:
        self.version = version
        self.info = tables.info
        context = ViewContext(tables, item_ids, item_vectors)
        self.item_ids = context.item_ids
        self.user_row = context.user_row
        self.n_users = context.n_users
        items = context.items
        self.titles = (
            items[Columns.title].astype(object).where(items[Columns.title].notna(), None).to_numpy()
            if Columns.title in items
            else np.full(len(self.item_ids), None, dtype=object)
        )
        # Item attributes as masks for request filters, built once per snapshot.
        self.catalogue = Catalogue(items, context.item_kinds)
        self.families = [family(context) for family in FAMILIES]
        self.segments: Segments = next(f for f in self.families if isinstance(f, Segments))
        self.columns: dict[str, Column] = {c.name: c for f in self.families for c in f.columns()}
        context.release_build_inputs()
        self._plans: dict[FeatureNames, _RowPlan] = {}

    def available(self) -> FeatureNames:
        """Every feature this snapshot can produce, in a stable order."""
        return FeatureNames(
            tuple(n for n, c in self.columns.items() if not c.categorical),
            tuple(n for n, c in self.columns.items() if c.categorical),
        )

    def missing(self, names: FeatureNames) -> list[str]:
        """Features the ranker needs that this snapshot cannot produce."""
        return [n for n in names.all if n not in self.columns]

    def user_rows(self, user_ids: list[str]) -> np.ndarray:
        """Row of each user in this snapshot, ``-1`` when it has none."""
        return np.array([self.user_row.get(u, -1) for u in user_ids], dtype=np.int64)

    def rows(self, names: FeatureNames, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
        """Numeric (float32) and categorical (object) matrices, one row per (user, candidate) pair."""
        plan = self._plan(names)
        items, user_rows = pairs.items, pairs.user_rows
        numeric = np.empty((len(items), len(names.numeric)), dtype=np.float32, order="F")  # what CatBoost reads best
        numeric[:, plan.item_cols] = plan.item_block[items]
        numeric[:, plan.user_cols] = plan.user_block[user_rows]
        for j, column in plan.pair_cols:
            assert column.compute is not None  # pair columns are computed (see Column)
            numeric[:, j] = column.compute(pairs)
        categorical = np.empty((len(items), len(names.categorical)), dtype=object)
        categorical[:, plan.item_cat_cols] = plan.item_cat_block[items]
        categorical[:, plan.user_cat_cols] = plan.user_cat_block[user_rows]
        if pairs.fresh is not None:
            _override_user_columns(numeric, names.numeric, pairs)
            _override_user_columns(categorical, names.categorical, pairs)
        return numeric, categorical

    def fresh_users(
        self,
        rows: np.ndarray,
        items: list[np.ndarray],
        days_ago: list[np.ndarray],
        weights: list[np.ndarray],
        attributes: list[dict[str, object]],
    ) -> FreshUsers:
        """Users with the interactions a request brings (per user: item indices newest first, ages, weights).

        Every family adds what its per-user values become with them, so the
        ranker sees such a user as the snapshot would show them had those
        interactions been in it.
        """
        users = FreshUsers(np.asarray(rows, dtype=np.int64), items, days_ago, weights, attributes)
        for family in self.families:
            family.fresh(users)
        return users

    def category_values(self, names: FeatureNames) -> set[str]:
        """Every value the snapshot's categorical columns among ``names`` hold (what a request's rows can show,
        except attributes a request brings)."""
        columns = [self.columns[n].values for n in names.categorical if n in self.columns]
        return {v for values in columns if values is not None for v in values.tolist() if isinstance(v, str)}

    def prepare(self, names: FeatureNames) -> None:
        """Build the row plan for a ranker now, not on the first request."""
        self._plan(names)

    def _plan(self, names: FeatureNames) -> _RowPlan:
        """Per-item and per-user columns stacked once, so a request gathers each block in one step."""
        plan = self._plans.get(names)
        if plan is None:
            plan = self._plans[names] = _RowPlan.build(
                [self.columns[n] for n in names.numeric],
                [self.columns[n] for n in names.categorical],
                len(self.item_ids),
                self.n_users + 1,
            )
        return plan

    def stored_attributes(self, user_id: str) -> dict[str, object]:
        """The segment attributes the users file gives for a user (empty when it has none)."""
        row = self.user_row.get(user_id)
        return {} if row is None else self.segments.attributes_of(row)

    def segment_scores(self, attributes: dict[str, object]) -> tuple[np.ndarray, list[str]] | None:
        """Cold start: item scores from the segments a new user's attributes fall into (``None``: no match)."""
        return self.segments.scores(attributes)


@dataclass
class _RowPlan:
    """Where each block of a ranker row comes from (see :meth:`FeatureView._plan`)."""

    item_cols: list[int] | slice  # a slice when the columns are adjacent: a plain copy, not a scatter
    item_block: np.ndarray
    user_cols: list[int] | slice  # a slice when the columns are adjacent: a plain copy, not a scatter
    user_block: np.ndarray
    pair_cols: list[tuple[int, Column]]
    item_cat_cols: list[int] | slice  # a slice when the columns are adjacent: a plain copy, not a scatter
    item_cat_block: np.ndarray
    user_cat_cols: list[int] | slice  # a slice when the columns are adjacent: a plain copy, not a scatter
    user_cat_block: np.ndarray

    @classmethod
    def build(cls, numeric: list[Column], categorical: list[Column], n_items: int, n_users: int) -> _RowPlan:
        def where(columns: list[Column], scope: str) -> list[int]:
            return [j for j, c in enumerate(columns) if c.scope == scope]

        item_cols, user_cols = where(numeric, "item"), where(numeric, "user")
        item_cat_cols, user_cat_cols = where(categorical, "item"), where(categorical, "user")
        return cls(
            item_cols=_adjacent(item_cols),
            item_block=_stack([_values(numeric[j]) for j in item_cols], n_items, np.float32),
            user_cols=_adjacent(user_cols),
            user_block=_stack([_values(numeric[j]) for j in user_cols], n_users, np.float32),
            pair_cols=[(j, numeric[j]) for j in where(numeric, "pair")],
            item_cat_cols=_adjacent(item_cat_cols),
            item_cat_block=_stack([_values(categorical[j]) for j in item_cat_cols], n_items, object),
            user_cat_cols=_adjacent(user_cat_cols),
            user_cat_block=_stack([_values(categorical[j]) for j in user_cat_cols], n_users, object),
        )


def _values(column: Column) -> np.ndarray:
    """An item or user column's array (columns of those scopes carry ``values``, see Column)."""
    assert column.values is not None, column.name
    return column.values


def _override_user_columns(matrix: np.ndarray, names: tuple[str, ...], pairs: Pairs) -> None:
    """User columns a request's interactions changed: the fresh users' values replace the snapshot's."""
    # Called only for pairs with fresh users (FeatureView.rows), whose slots come with them.
    assert pairs.fresh is not None and pairs.fresh_slots is not None
    state = pairs.fresh.state
    columns = _state_columns(names, tuple(state))
    if not len(columns):
        return
    if pairs.one_owner and pairs.fresh_slots[0] >= 0:  # a lone request's fresh user: its values on every row
        slot = int(pairs.fresh_slots[0])
        matrix[:, columns] = [state[names[j]][slot] for j in columns]
        return
    rows = pairs.fresh_positions
    values = np.array([state[names[j]] for j in columns]).T  # (fresh users, columns)
    matrix[rows[:, None], columns] = values[pairs.fresh_slots[rows]]  # one block, not a masked copy per column


@functools.lru_cache(maxsize=64)
def _state_columns(names: tuple[str, ...], state_keys: tuple[str, ...]) -> np.ndarray:
    """Which of a ranker's columns the fresh users' state replaces (a few rankers x one set of families)."""
    return np.array([j for j, name in enumerate(names) if name in state_keys], dtype=np.intp)


def _adjacent(columns: list[int]) -> list[int] | slice:
    """The columns as a slice when they are adjacent (each family's columns usually are)."""
    if columns and columns == list(range(columns[0], columns[-1] + 1)):
        return slice(columns[0], columns[-1] + 1)
    return columns


def _stack(columns: list[np.ndarray], rows: int, dtype: type) -> np.ndarray:
    if not columns:
        return np.empty((rows, 0), dtype=dtype)
    return np.ascontiguousarray(np.column_stack(columns).astype(dtype, copy=False))
