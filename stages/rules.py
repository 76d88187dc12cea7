"""Business rules over the catalogue: attribute filters, hidden items, diversity.

A :class:`Catalogue` is built once per feature view: every item attribute the
snapshot knows becomes either a float array (numeric) or an items x values
boolean matrix (categorical and list attributes such as ``genres``). A filter
is then a few vectorised comparisons over the catalogue, cached per distinct
filter, so a request pays a dictionary lookup for a filter seen before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from features.schema import id_text
from features.store import resolve

MAX_CACHED_FILTERS = 1024
MAX_LISTED_VALUES = 20  # known values named in an error message
HIDDEN_ITEMS_FILE = "hidden_items.txt"


class RuleError(ValueError):
    """A rule the catalogue cannot apply (unknown attribute or value, wrong kind); ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message  # without the field, for errors that name the field apart


@dataclass(frozen=True)
class AttributeFilter:
    """One attribute's rule: values to include (any of) or exclude (all of), or a numeric range."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    @property
    def is_range(self) -> bool:
        return any(v is not None for v in (self.gte, self.gt, self.lte, self.lt))

    @property
    def is_values(self) -> bool:
        return self.include is not None or bool(self.exclude)


Filters = tuple[tuple[str, AttributeFilter], ...]  # sorted by attribute: hashable, one cache entry per rule


def as_filters(filters: dict[str, AttributeFilter] | None) -> Filters:
    """A request's filters in their canonical (hashable) form."""
    return tuple(sorted((filters or {}).items()))


class Catalogue:
    """Item attributes as masks over the candidate model's items (see the module docstring)."""

    def __init__(self, items: pd.DataFrame, kinds: dict[str, str]) -> None:
        self.n_items = len(items)
        self.kinds = {a: k for a, k in kinds.items() if a in items.columns}
        self.numbers: dict[str, np.ndarray] = {}
        self.values: dict[str, dict[str, int]] = {}
        self.matrices: dict[str, np.ndarray] = {}
        for attribute, kind in self.kinds.items():
            column = items[attribute]
            if kind == "numeric":
                self.numbers[attribute] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                self.values[attribute], self.matrices[attribute] = _value_matrix(column, kind)
        self._cache: dict[Filters, np.ndarray] = {}

    def mask(self, filters: Filters) -> np.ndarray | None:
        """Items every filter allows (``None``: no filters, everything allowed)."""
        if not filters:
            return None
        cached = self._cache.get(filters)
        if cached is None:
            cached = np.ones(self.n_items, dtype=bool)
            for attribute, rule in filters:
                cached &= self._one(attribute, rule)
            cached.setflags(write=False)
            if len(self._cache) >= MAX_CACHED_FILTERS:
                self._cache.clear()
            self._cache[filters] = cached
        return cached

    def check(self, filters: Filters) -> None:
        """Raise :class:`RuleError` for a filter this catalogue cannot apply (before any work is done)."""
        self.mask(filters)

    def _one(self, attribute: str, rule: AttributeFilter) -> np.ndarray:
        field = f"filters.{attribute}"
        kind = self.kinds.get(attribute)
        if kind is None:
            known = ", ".join(sorted(self.kinds)) or "none"
            raise RuleError(field, f"unknown item attribute {attribute!r} (known: {known})")
        if kind == "numeric":
            if rule.is_values:
                raise RuleError(field, f"{attribute} is numeric: filter it with gte, gt, lte or lt")
            return _in_range(self.numbers[attribute], rule)
        if rule.is_range:
            raise RuleError(field, f"{attribute} is {kind}: filter it with include or exclude")
        matrix, index = self.matrices[attribute], self.values[attribute]
        allowed = np.ones(self.n_items, dtype=bool)
        if rule.include is not None:
            allowed &= matrix[:, self._columns(index, rule.include, f"{field}.include")].any(axis=1)
        if rule.exclude:
            allowed &= ~matrix[:, self._columns(index, rule.exclude, f"{field}.exclude")].any(axis=1)
        return allowed

    @staticmethod
    def _columns(index: dict[str, int], values: tuple[str, ...], field: str) -> list[int]:
        unknown = [v for v in values if v not in index]
        if unknown:
            known = sorted(index)
            listed = ", ".join(known[:MAX_LISTED_VALUES]) + (", ..." if len(known) > MAX_LISTED_VALUES else "")
            raise RuleError(field, f"unknown value {unknown[0]!r} (known: {listed})")
        return [index[v] for v in values]


def _value_matrix(column: pd.Series, kind: str) -> tuple[dict[str, int], np.ndarray]:
    """Every value of a categorical or list attribute, and which items carry it."""
    cells = [
        tuple(str(v) for v in cell if v is not None)
        if kind == "list" and isinstance(cell, tuple | list)
        else (() if cell is None or cell != cell else (str(cell),))
        for cell in column.to_numpy()
    ]
    index = {v: j for j, v in enumerate(sorted({v for cell in cells for v in cell}))}
    matrix = np.zeros((len(cells), len(index)), dtype=bool)
    for i, cell in enumerate(cells):
        matrix[i, [index[v] for v in cell]] = True
    return index, matrix


def _in_range(values: np.ndarray, rule: AttributeFilter) -> np.ndarray:
    """Items whose value lies in the range (a missing value never does)."""
    allowed = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        if rule.gte is not None:
            allowed &= values >= rule.gte
        if rule.gt is not None:
            allowed &= values > rule.gt
        if rule.lte is not None:
            allowed &= values <= rule.lte
        if rule.lt is not None:
            allowed &= values < rule.lt
    return allowed


class HiddenItemsError(ValueError):
    """``hidden_items.txt`` cannot be read as a list of ids; the message says why (no paths, no class names)."""


def read_hidden(location: str) -> frozenset[str]:
    """Hidden item ids from a text file (path or pyarrow URI), one a line; ``#`` comments, blank lines ignored.

    Ids follow the API's rule (:func:`features.schema.id_text`: ``100.0`` and
    `` 100 `` hide item ``100``), and a UTF-8 byte-order mark is not part of
    the first id. An absent file hides nothing; anything else that is not UTF-8
    text (a directory, random bytes) is a :class:`HiddenItemsError`, never an
    empty list: serving withdrawn items because the file broke would fail open.
    """
    fs, path = resolve(location)
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            return frozenset()
        if kind != pafs.FileType.File:
            raise HiddenItemsError(f"{HIDDEN_ITEMS_FILE} is not a file")
        with fs.open_input_stream(path) as src:
            raw = src.read()
    except OSError as exc:
        raise HiddenItemsError(f"{HIDDEN_ITEMS_FILE} cannot be read: {str(exc).splitlines()[0][:200]}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HiddenItemsError(f"{HIDDEN_ITEMS_FILE} is not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
    if "\x00" in text:
        raise HiddenItemsError(f"{HIDDEN_ITEMS_FILE} holds NUL bytes: not a text file")
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return frozenset(id_text(line) for line in lines if line.strip())


def hidden_items_file(feature_store: str) -> str:
    """Where the hidden list lives: next to the feature store's snapshots."""
    return f"{feature_store.rstrip('/')}/{HIDDEN_ITEMS_FILE}"


def mmr(order: np.ndarray, relevance: np.ndarray, vectors: np.ndarray, diversity: float, n: int) -> np.ndarray:
    """Maximal marginal relevance: pick ``n`` of ``order`` trading relevance against similarity to those picked.

    ``relevance`` is per entry of ``order`` (rescaled to 0..1 here); ``vectors``
    are unit item vectors (rows of ``order``). Each step takes the item with the
    highest ``(1 - diversity) * relevance - diversity * max cosine to the picked``;
    ties keep the ranked order. ``diversity`` 0 returns ``order[:n]``.
    """
    n = min(n, len(order))
    if diversity <= 0 or n <= 1:
        return order[:n]
    low, high = float(relevance.min()), float(relevance.max())
    rel = (relevance - low) / (high - low) if high > low else np.zeros(len(order))
    sims = vectors @ vectors.T
    picked = [0]
    closest = sims[0].copy()
    free = np.ones(len(order), dtype=bool)
    free[0] = False
    for _ in range(n - 1):
        gain = np.where(free, (1 - diversity) * rel - diversity * closest, -np.inf)
        best = int(np.argmax(gain))  # first maximum: the better ranked of equals
        picked.append(best)
        free[best] = False
        closest = np.maximum(closest, sims[best])
    return order[picked]


def intra_list_diversity(items: np.ndarray, unit_vectors: np.ndarray) -> float:
    """1 - mean pairwise cosine of a list's items (NaN for fewer than two)."""
    if len(items) < 2:
        return float("nan")
    vectors = unit_vectors[items]
    sims = vectors @ vectors.T
    n = len(items)
    return float(1 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
