"""Candidate generation: ALS, recent popularity and co-consumption, merged into one list per user.

ALS alone misses many of the items users take next (new releases, what is
popular this month, the obvious follow-up to the last thing watched), so
three sources propose candidates and each candidate carries its rank in
every source as a ranker feature:

- ``als``: top-N by the ALS score (user factors times item factors);
- ``popular``: the most taken items in the last ``popular_days`` before the fit, this week's
  risers pushed up (each item's share of the last ``popular_recent_days`` added to it), each
  user's takes damped by how many they made in the window (a few heavy raters make a week);
- ``cooc``: items most often taken together with the user's latest items.

Saved as plain files (``.npz``/``.npy``, no pickle) so the serving image
needs no training code (:meth:`CandidateModel.save`): ``als.npz`` is the CPU
ALS class's settings and ``als_{user,item}_factors.npy`` its factors,
``ids.npz`` the id maps, ``seen_{data,indices,indptr}.npy`` each user's
interacted items (CSR), ``popular.npy`` the recent-popularity ranking,
``cold_share.npy`` the popularity cold start starts from, ``latest.npy`` each
user's latest items, ``cooc_{items,weights}.npy`` each item's co-consumption
neighbours and their weights (padded arrays, so a request gathers rows
instead of building sparse matrices). Every ``.npy`` file but the two small
rankings is loaded memory-mapped, so a pod's workers share one copy (the seen
matrix alone is 160 MB at 20M interactions). Models saved before these files
kept the factors inside ``als.npz`` and wrote ``seen.npz`` and ``cooc.npz``:
:meth:`CandidateModel.load` still reads them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from features.families.candidate_pair import SOURCES
from features.schema import DAY, Columns

SCORE_CHUNK = 1024  # users scored at once: a few 1024 x catalogue arrays (27k items: several hundred MB)
COOC_HISTORY = 50  # a user's latest items that count towards co-consumption (bounds the work on heavy users)
LATEST_BLOCK_ROWS = 1 << 21  # interactions per block when finding users' latest items (bounds its memory)
COOC_BLOCK = 2048  # items whose co-consumption rows are computed at once (bounds that step's memory)


@dataclass(frozen=True)
class CandidateParams:
    """Hyperparameters of the candidate stage (recorded in its model card)."""

    factors: int = 32
    regularization: float = 0.1
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 42
    popular_days: int = 30  # window of the recent-popularity source ...
    # ... plus each item's share of this shorter window (0: none). Which window proposes best moves from week to
    # week; the sum was never the worst over three disjoint-ish periods of MovieLens-100K (docs/quality.md).
    popular_recent_days: int = 7
    # Each take in those windows counts 1 / n ** popular_user_damping, n the taker's takes in the window (0: plain
    # counts). Three users make 25-50% of a MovieLens week; at 0.5 they stop deciding the list (docs/quality.md).
    popular_user_damping: float = 0.5
    n_popular: int = 100  # candidates the popularity source adds
    n_cooc: int = 50  # candidates the co-consumption source adds
    cooc_seeds: int = 5  # the user's latest items whose neighbours are proposed
    cooc_neighbours: int = 50  # neighbours kept per item
    cold_start_days: int | None = 30  # popularity window for users without interactions (None: all time)
    segment_weight: float = 0.0  # how much the user's segments (age band, ...) reorder it; the backtest sets both


def popularity_share(
    interactions: pd.DataFrame,
    item_ids: np.ndarray,
    until: int | None,
    days: int | None,
    user_damping: float = 0.0,
) -> np.ndarray:
    """Each item's share of the interactions in the ``days`` before ``until`` (all before it for ``None``).

    ``until`` defaults to just after the last interaction. With ``user_damping``
    d > 0 a take counts 1 / n ** d, n its user's takes in the window: a user who
    rates 300 films in a day then moves the list as much as a few users do.
    """
    times = interactions[Columns.timestamp].to_numpy()
    until = int(times.max()) + 1 if until is None else until
    window = (times < until) & (times >= until - days * DAY if days is not None else True)
    taken = interactions.loc[window, [Columns.user, Columns.item]]
    if user_damping:
        per_user = taken.groupby(Columns.user, observed=True)[Columns.item].transform("size").to_numpy(np.float64)
        weights = pd.Series(per_user**-user_damping, index=taken.index)
        counts = weights.groupby(taken[Columns.item].to_numpy()).sum()
    else:
        counts = taken[Columns.item].value_counts()
    counts = counts.reindex(item_ids, fill_value=0).to_numpy(np.float64)
    return (counts / counts.sum() if counts.sum() > 0 else counts).astype(np.float32)


def ranking(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties by index (a stable, seedless order)."""
    return np.argsort(-scores, kind="stable").astype(np.int64)  # stable: ties by index


@dataclass
class CandidateBatch:
    """Merged candidates for a batch of users: item indices, ALS scores, and each source's rank (NaN: not proposed)."""

    items: list[np.ndarray]
    scores: list[np.ndarray]
    source_ranks: dict[str, list[np.ndarray]]
    cooc_scores: list[np.ndarray]

    @classmethod
    def empty(cls) -> CandidateBatch:
        return cls([], [], {s: [] for s in SOURCES}, [])

    @classmethod
    def gather(cls, picks: list[tuple[CandidateBatch, int]]) -> CandidateBatch:
        """One batch from (batch, position) picks, in the order given."""
        out = cls.empty()
        for batch, slot in picks:
            out.items.append(batch.items[slot])
            out.scores.append(batch.scores[slot])
            out.cooc_scores.append(batch.cooc_scores[slot])
            for source in SOURCES:
                out.source_ranks[source].append(batch.source_ranks[source][slot])
        return out

    def extend(self, other: CandidateBatch) -> None:
        self.items += other.items
        self.scores += other.scores
        self.cooc_scores += other.cooc_scores
        for source in SOURCES:
            self.source_ranks[source] += other.source_ranks[source]


@dataclass(frozen=True)
class Recent:
    """Interactions a request brings that the model was not fitted on: item indices, newest first, and weights.

    They count as the user's history for every source: the ALS vector is
    re-solved with them, they seed co-consumption first and, with
    ``exclude_seen``, they are not proposed again.
    """

    items: np.ndarray  # int64 model item indices
    weights: np.ndarray  # float32, one per item


class CandidateModel:
    """The candidate sources over one user-item matrix, plus what serving needs around them."""

    def __init__(
        self,
        als: AlternatingLeastSquares,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        seen: sp.csr_matrix,
        popular: np.ndarray,
        cold_share: np.ndarray,
        latest: np.ndarray,
        cooc: Neighbours,
        params: CandidateParams,
    ) -> None:
        self.als = als
        self.user_ids = np.asarray(user_ids, dtype=object)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}
        self.seen = seen
        self.popular = popular
        self.cold_share = cold_share
        self.latest = latest
        self.cooc = cooc
        self.params = params

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def fit(
        cls, interactions: pd.DataFrame, params: CandidateParams = CandidateParams(), as_of: int | None = None
    ) -> CandidateModel:
        """Fit every source on the interactions before ``as_of`` (all by default), repeats adding up."""
        if as_of is not None:
            interactions = interactions[interactions[Columns.timestamp] < as_of]
        users = pd.Categorical(interactions[Columns.user])
        items = pd.Categorical(interactions[Columns.item])
        weights = interactions[Columns.weight].to_numpy(dtype=np.float32)
        matrix = sp.csr_matrix(
            (weights, (users.codes, items.codes)),
            shape=(len(users.categories), len(items.categories)),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        # implicit parallelises itself; BLAS threads on top only oversubscribe the cores.
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=params.alpha,
                iterations=params.iterations,
                random_state=params.seed,
            )
            als.fit(matrix, show_progress=False)
        times = interactions[Columns.timestamp].to_numpy()
        as_of = int(times.max()) + 1 if as_of is None else as_of
        item_ids = np.asarray(items.categories, dtype=object)
        damping = params.popular_user_damping
        recent_share = popularity_share(interactions, item_ids, as_of, params.popular_days, damping)
        if params.popular_recent_days:
            recent_share += popularity_share(interactions, item_ids, as_of, params.popular_recent_days, damping)
        popular = ranking(recent_share)[: int((recent_share > 0).sum())]  # items nobody took lately are no proposal
        cold_share = popularity_share(interactions, item_ids, as_of, params.cold_start_days)
        order = np.lexsort((items.codes, -times, users.codes))  # by user, newest first
        latest = _latest_items(users.codes[order], items.codes[order], len(users.categories), COOC_HISTORY)
        return cls(
            als,
            np.asarray(users.categories, dtype=object),
            item_ids,
            matrix,
            popular,
            cold_share,
            latest[:, : params.cooc_seeds],
            _co_consumption(latest, len(items.categories), params.cooc_neighbours),
            params,
        )

    def with_cold_start(
        self, interactions: pd.DataFrame, days: int | None, segment_weight: float, as_of: int | None = None
    ) -> CandidateModel:
        """The same model with another cold-start window and segment weight (chosen by the backtest)."""
        as_of = int(interactions[Columns.timestamp].max()) + 1 if as_of is None else as_of
        params = replace(self.params, cold_start_days=days, segment_weight=segment_weight)
        share = popularity_share(interactions, self.item_ids, as_of, days)
        return CandidateModel(
            self.als, self.user_ids, self.item_ids, self.seen, self.popular, share, self.latest, self.cooc, params
        )

    def save(self, directory: Path) -> None:
        """Write the model's files into ``directory`` (a BentoML model folder)."""
        directory.mkdir(parents=True, exist_ok=True)
        _save_als(self.als, directory)
        np.savez(directory / "ids.npz", users=self.user_ids.astype(str), items=self.item_ids.astype(str))
        # Plain .npy files, not npz: loaded memory-mapped, so every worker of a pod shares one copy of the
        # largest arrays (at 20M interactions the seen matrix alone is 160 MB) through the page cache.
        for part in SEEN_PARTS:
            _save_array(directory / f"seen_{part}.npy", getattr(self.seen, part))
        _save_array(directory / "cooc_items.npy", self.cooc.items)
        _save_array(directory / "cooc_weights.npy", self.cooc.weights)
        _save_array(directory / "popular.npy", self.popular)
        _save_array(directory / "cold_share.npy", self.cold_share)
        _save_array(directory / "latest.npy", self.latest)

    @classmethod
    def load(cls, directory: Path, params: CandidateParams) -> CandidateModel:
        """Read what :meth:`save` wrote, without pickle."""
        als = _load_als(directory)
        with np.load(directory / "ids.npz", allow_pickle=False) as ids:
            users, items = ids["users"].astype(object), ids["items"].astype(object)
        return cls(
            als,
            users,
            items,
            _load_seen(directory, (len(users), len(items))),
            np.load(directory / "popular.npy", allow_pickle=False),
            np.load(directory / "cold_share.npy", allow_pickle=False),
            _mapped(directory / "latest.npy"),
            Neighbours.load(directory),
            params,
        )

    def counts(self) -> dict[str, int]:
        """Users, items and interactions it was fitted on (for the model card)."""
        return {"n_users": len(self.user_ids), "n_items": len(self.item_ids), "n_interactions": int(self.seen.nnz)}

    def top_n(
        self,
        users: np.ndarray,
        n: int,
        exclude_seen: bool = True,
        exclude: list[np.ndarray] | None = None,
        recent: list[Recent | None] | None = None,
    ) -> CandidateBatch:
        """ALS top-``n`` per user, then the other sources' new proposals (model indices).

        ``exclude`` holds, per user, extra item indices to leave out; ``recent``,
        per user, interactions the model has not seen (a user index of -1 is a
        user known only through them). Users are scored in chunks so a whole
        catalogue times all users never sits in memory.
        """
        batch = CandidateBatch.empty()
        for start in range(0, len(users), SCORE_CHUNK):
            chunk = slice(start, start + SCORE_CHUNK)
            batch.extend(
                self._top_n(
                    users[chunk],
                    n,
                    exclude_seen,
                    exclude[chunk] if exclude else None,
                    recent[chunk] if recent else [None] * len(users[chunk]),
                )
            )
        return batch

    def user_vectors(self, users: np.ndarray, recent: list[Recent | None]) -> np.ndarray:
        """ALS user factors; re-solved from the stored history plus the recent items where a user has some.

        The same least-squares solve as implicit's ``recalculate_user`` (item
        factors fixed, confidence = alpha x weight), in numpy: implicit's
        version builds a sparse matrix and enters an OpenMP region per call,
        which costs milliseconds on the request path; this costs microseconds.
        """
        vectors = self.als.user_factors[np.maximum(users, 0)]  # a gather: a copy of its own
        for row, extra in enumerate(recent):
            if extra is not None:
                vectors[row] = self._solve_user(*self._weighted_history(int(users[row]), extra))
        return vectors

    def _weighted_history(self, user: int, extra: Recent) -> tuple[np.ndarray, np.ndarray]:
        """A user's items, stored and recent, each once, with its confidence (alpha x weight; repeats add up, as in
        the fit).

        The stored row is sorted and each item once (``sum_duplicates``), so
        one binary search finds the recent items it holds; a request brings a
        few, so the rest runs in plain Python, where each numpy call would cost
        more than the arithmetic. The order is the one the solve's float sums
        have always had: the stored items then the recent ones when none
        repeats or is stored already (most requests), by item otherwise.
        """
        stored_items, stored_weights = self._seen_row(user)
        if not self.seen_canonical:  # never for a model fitted here; summed and sorted as fitting would have
            stored_items, stored_weights = _each_once(stored_items, stored_weights.astype(np.float64))
        confidence = stored_weights.astype(np.float64)  # a copy: recent weights add to it
        added: dict[int, float] = {}  # recent items the row does not hold, in order, weights summed
        recent_items, recent_weights = extra.items.tolist(), extra.weights.tolist()
        if len(stored_items):
            at = np.searchsorted(stored_items, extra.items.astype(stored_items.dtype))  # one dtype: no copy of the row
            positions, held = at.tolist(), stored_items[np.minimum(at, len(stored_items) - 1)].tolist()
        else:
            positions, held = [0] * len(recent_items), [-1] * len(recent_items)
        merged = False  # a recent item repeated, or already stored: its weights were added up
        for item, weight, at, found in zip(recent_items, recent_weights, positions, held, strict=True):
            if found == item:
                confidence[at] += weight
                merged = True
            elif item in added:
                added[item] += weight
                merged = True
            else:
                added[item] = weight
        items = stored_items
        if added:
            confidence = np.concatenate([confidence, list(added.values())])
            items = np.concatenate([stored_items, list(added)])
        if merged:
            order = np.argsort(items, kind="stable")
            items, confidence = items[order], confidence[order]
        return items, confidence if self.params.alpha == 1.0 else self.params.alpha * confidence

    @cached_property
    def seen_canonical(self) -> bool:
        """Whether the stored histories are sorted without repeats (checked once, not per request)."""
        return bool(self.seen.has_canonical_format)

    def _solve_user(self, items: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """x = (YtY + reg I + Yt (C - I) Y)^-1 Yt C p for one user's items, each once (:meth:`_weighted_history`)."""
        factors = self._item_factors64[items]
        system = self._gram + (factors.T * (confidence - 1.0)) @ factors
        # Symmetric positive definite (weights are positive): a Cholesky solve, a third of a general one's time.
        _, solution, info = lapack.dposv(system, factors.T @ confidence)
        if info != 0:
            solution = np.linalg.solve(system, factors.T @ confidence)
        return solution.astype(self.als.user_factors.dtype)

    @cached_property
    def _gram(self) -> np.ndarray:
        """YtY + regularization x I, shared by every re-solved user."""
        factors = self._item_factors64
        return factors.T @ factors + self.params.regularization * np.eye(factors.shape[1])

    @cached_property
    def _item_factors64(self) -> np.ndarray:
        """The item factors in float64 (the re-solve's and the candidates' scores), made once per model."""
        return self.als.item_factors.astype(np.float64)

    def _exact_scores(self, vector: np.ndarray, items: np.ndarray) -> np.ndarray:
        """A user's ALS scores of their candidates, the same whoever else is scored in the batch.

        The batch's float32 product picks the candidates; its sums run in
        another order for a lone row than for a batch, so a score moved by a
        few 1e-7 with the requests batched alongside, and the ranker's prior
        reads it linearly. One float64 product per user, over the candidates
        only (about 190 rows), gives the same float32 score either way.
        """
        return (self._item_factors64[items] @ vector.astype(np.float64)).astype(np.float32)

    def seen_items(self, user: int) -> np.ndarray:
        """The items a user has taken in the training data (none for -1)."""
        return self._seen_row(user)[0]

    def _seen_row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """A user's stored items and summed weights (none for a user the model does not know)."""
        if user < 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        start, end = self.seen.indptr[user : user + 2].tolist()
        return self.seen.indices[start:end], self.seen.data[start:end]

    def _seeds(self, users: np.ndarray, recent: list[Recent | None]) -> np.ndarray:
        """Each user's latest items for co-consumption: the recent ones first, then the stored ones."""
        seeds = self.latest[np.maximum(users, 0)]  # a gather: a copy of its own
        for row, extra in enumerate(recent):
            if extra is None:
                continue
            stored = self.latest[users[row]] if users[row] >= 0 else np.empty(0, np.int64)
            merged = _merge([extra.items, stored[stored >= 0]], self.n_items)[: seeds.shape[1]]
            seeds[row] = -1
            seeds[row, : len(merged)] = merged
        return seeds

    def _top_n(
        self,
        users: np.ndarray,
        n: int,
        exclude_seen: bool,
        exclude: list[np.ndarray] | None,
        recent: list[Recent | None],
    ) -> CandidateBatch:
        # A plain dot product rather than implicit's recommend(): it takes a
        # different exclusion list per user in one batched call.
        vectors = self.user_vectors(users, recent)
        scores = vectors @ self.als.item_factors.T
        cooc = self._cooc_scores(self._seeds(users, recent))
        blocked = np.zeros(scores.shape, dtype=bool)
        if exclude_seen:
            blocked[self._seen_pairs(users, recent)] = True
        if exclude:
            for row, items in enumerate(exclude):
                blocked[row, items] = True
        als_top = _top(np.where(blocked, -np.inf, scores), min(n, self.n_items))
        cooc_top = _top(np.where(blocked | (cooc <= 0), -np.inf, cooc), self.params.n_cooc)
        batch = CandidateBatch.empty()
        for row in range(len(users)):
            proposals = {
                "als": als_top[row],
                "popular": self.popular[~blocked[row, self.popular]][: self.params.n_popular],
                "cooc": cooc_top[row],
            }
            merged, ranks = _merge_ranked(list(proposals.values()), self.n_items)
            batch.items.append(merged)
            batch.scores.append(self._exact_scores(vectors[row], merged))
            batch.cooc_scores.append(cooc[row, merged])  # float32 already, and a copy of its own
            for source, rank in zip(proposals, ranks, strict=True):
                batch.source_ranks[source].append(rank)
        return batch

    def _seen_pairs(self, users: np.ndarray, recent: list[Recent | None]) -> tuple[np.ndarray | int, np.ndarray]:
        """(row, item) of every item each user has taken, stored or recent."""
        if len(users) == 1:  # a lone request: its user's row as it is, and the first row of the block
            seen = self._seen_row(int(users[0]))[0]
            if recent[0] is not None:
                seen = np.concatenate([seen, recent[0].items])
            return 0, seen
        # Slices of the CSR arrays: a sparse row selection costs more than the rest of a request.
        known = np.maximum(users, 0)
        starts = self.seen.indptr[known]
        ends = np.where(users >= 0, self.seen.indptr[known + 1], starts)  # a user known only by recent items: none
        rows = [np.repeat(np.arange(len(users)), ends - starts)]
        items = [self.seen.indices[a:b] for a, b in zip(starts, ends, strict=True)]
        for row, extra in enumerate(recent):
            if extra is not None:
                rows.append(np.full(len(extra.items), row))
                items.append(extra.items)
        return np.concatenate(rows), np.concatenate(items)

    def _cooc_scores(self, seeds: np.ndarray) -> np.ndarray:
        """Per user, the summed co-consumption weight of every item with the user's latest items (``seeds``)."""
        if len(seeds) == 1:  # a lone request: its known seeds' neighbours, counted over the catalogue
            rows = seeds[0][seeds[0] >= 0]
            neighbours = self.cooc.items[rows]
            valid = neighbours >= 0
            totals = np.bincount(neighbours[valid], weights=self.cooc.weights[rows][valid], minlength=self.n_items)
            return totals[None].astype(np.float32)
        known = seeds >= 0
        rows = np.where(known, seeds, 0)
        neighbours = self.cooc.items[rows]  # (users, seeds, neighbours), -1 pads
        weights = self.cooc.weights[rows] * known[..., None]
        valid = neighbours >= 0
        flat = (neighbours + (np.arange(len(seeds)) * self.n_items)[:, None, None])[valid]
        totals = np.bincount(flat, weights=weights[valid], minlength=len(seeds) * self.n_items)
        return totals.reshape(len(seeds), self.n_items).astype(np.float32)

    def similar_items(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by cosine of ALS item factors (the item itself excluded)."""
        ids, scores = self.als.similar_items(item, N=n + 1)
        keep = ids != item
        return ids[keep][:n].astype(np.int64), scores[keep][:n].astype(np.float32)


SEEN_PARTS = ("data", "indices", "indptr")  # the seen matrix's CSR arrays, a file each
COOC_PARTS = ("items", "weights")  # the co-consumption neighbours, a file each
ALS_FACTORS = ("user_factors", "item_factors")  # beside implicit's als.npz, which keeps the settings


def _save_als(als: AlternatingLeastSquares, directory: Path) -> None:
    """implicit's file without the factors, and the factors as .npy files (memory-mapped by :func:`_load_als`)."""
    saved = io.BytesIO()
    als.save(saved)
    saved.seek(0)
    with np.load(saved, allow_pickle=False) as arrays:
        np.savez(directory / "als.npz", **{k: arrays[k] for k in arrays.files if k not in ALS_FACTORS})
    for name in ALS_FACTORS:
        _save_array(directory / f"als_{name}.npy", getattr(als, name))


def _save_array(path: Path, array: np.ndarray) -> None:
    """Written beside, then moved over: a process that maps the file being replaced keeps reading the old one
    (``np.save`` over it truncated the file under the map)."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as out:
        np.save(out, array, allow_pickle=False)
    os.replace(partial, path)


def _mapped(path: Path) -> np.ndarray:
    """A saved array as a read-only memory map: every process that maps it shares one copy in the page cache.

    Served as a plain ndarray over the mapping (its base keeps the map open): indexing an ``np.memmap``
    goes through its Python ``__getitem__`` and ``__array_finalize__``, about 15 us a gather on the request path.
    """
    return np.load(path, allow_pickle=False, mmap_mode="r").view(np.ndarray)


def _load_als(directory: Path) -> AlternatingLeastSquares:
    """implicit's model with read-only, memory-mapped factors: a pod's workers share one copy (at 138k users
    and 26k items, 21 MB a worker). A model saved before the .npy files: its factors, read from als.npz."""
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares.load(str(directory / "als.npz"))
    mapped = [directory / f"als_{name}.npy" for name in ALS_FACTORS]
    if all(path.exists() for path in mapped):
        for name, path in zip(ALS_FACTORS, mapped, strict=True):
            setattr(als, name, _mapped(path))
    if any(getattr(als, name, None) is None for name in ALS_FACTORS):
        raise FileNotFoundError(f"{directory}: ALS factors missing (als_user_factors.npy, als_item_factors.npy)")
    return als


def _load_seen(directory: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    """The seen matrix over read-only memory maps of its files (a model saved before them: its seen.npz, read)."""
    if not (directory / "seen_indptr.npy").exists():
        return sp.load_npz(directory / "seen.npz").tocsr()
    data, indices, indptr = (_mapped(directory / f"seen_{part}.npy") for part in SEEN_PARTS)
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def _top(scores: np.ndarray, n: int) -> list[np.ndarray]:
    """Per row, the indices of the ``n`` highest finite scores, best first (ties by index)."""
    n = min(n, scores.shape[1])
    if n <= 0:
        return [np.empty(0, np.int64) for _ in range(len(scores))]
    top = (
        np.argpartition(-scores, n - 1, axis=1)[:, :n]
        if n < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    )
    out = []
    for row in range(len(scores)):
        picked = np.sort(top[row])  # by index, so a stable sort by score breaks ties by index
        picked_scores = scores[row, picked]
        order = np.argsort(-picked_scores, kind="stable")
        picked, picked_scores = picked[order], picked_scores[order]
        out.append(picked[np.isfinite(picked_scores)].astype(np.int64, copy=False))
    return out


def _merge(proposals: list[np.ndarray], n_items: int) -> np.ndarray:
    """The sources' proposals in order (ALS first), each item once.

    Each item's first position comes from a scratch array over the catalogue, left unfilled (only the proposed
    items' slots are written, then read): a few numpy calls whatever the catalogue's size.
    """
    proposed = np.concatenate(proposals).astype(np.intp, copy=False)
    at = np.arange(len(proposed))
    first = np.empty(n_items, dtype=np.intp)
    first[proposed[::-1]] = at[::-1]  # the last write wins: each item's first position
    return proposed[first[proposed] == at].astype(np.int64, copy=False)


def _each_once(items: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items sorted, each once, their weights summed in the order given."""
    order = np.argsort(items, kind="stable")
    items = items[order]
    first = np.ones(len(items), dtype=bool)
    np.not_equal(items[1:], items[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return items[starts], np.add.reduceat(weights[order], starts) if len(items) else weights[:0]


def _merge_ranked(proposals: list[np.ndarray], n_items: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`_merge`, and each source's 1-based rank of every merged candidate (NaN where it did not propose it;
    an item a source proposed twice keeps its first rank), read from a second scratch array of merged positions:
    about half the time of sorting and searching each source's proposals for a few hundred candidates."""
    merged = _merge(proposals, n_items)
    position = np.empty(n_items, dtype=np.intp)
    position[merged] = np.arange(len(merged))
    ranks = np.full((len(proposals), len(merged)), np.nan, dtype=np.float32)
    for rank, items in zip(ranks, proposals, strict=True):
        rank[position[items[::-1]]] = np.arange(len(items), 0, -1, dtype=np.float32)
    return merged, list(ranks)


def _latest_items(user_codes: np.ndarray, item_codes: np.ndarray, n_users: int, width: int) -> np.ndarray:
    """Each user's ``width`` latest distinct items, newest first (rows padded with -1).

    Expects the pairs grouped by user, each user's newest first. Whole users a block of rows at a time: one
    pandas pass over every pair took 0.9 GB at 20M interactions (it grows with the interactions).
    """
    latest = np.full((n_users, width), -1, dtype=np.int64)
    user_starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    low = 0
    while low < len(user_codes):
        # The block ends where the first user starting at or after LATEST_BLOCK_ROWS more rows starts.
        next_start = np.searchsorted(user_starts, low + LATEST_BLOCK_ROWS)
        high = int(user_starts[next_start]) if next_start < len(user_starts) else len(user_codes)
        frame = pd.DataFrame({"u": user_codes[low:high], "i": item_codes[low:high]}).drop_duplicates()
        slot = frame.groupby("u", sort=False).cumcount().to_numpy()
        kept = slot < width
        latest[frame["u"].to_numpy()[kept], slot[kept]] = frame["i"].to_numpy()[kept]
        low = high
    return latest


@dataclass(frozen=True)
class Neighbours:
    """Each item's nearest items and their weights, best first (``items`` padded with -1)."""

    items: np.ndarray  # (n_items, width) int64
    weights: np.ndarray  # (n_items, width) float32

    @classmethod
    def load(cls, directory: Path) -> Neighbours:
        """Memory-mapped (a model saved before these files: its cooc.npz, read)."""
        if not (directory / "cooc_items.npy").exists():
            with np.load(directory / "cooc.npz", allow_pickle=False) as arrays:
                return cls(arrays["items"], arrays["weights"])
        return cls(*(_mapped(directory / f"cooc_{part}.npy") for part in COOC_PARTS))


def _co_consumption(latest: np.ndarray, n_items: int, neighbours: int) -> Neighbours:
    """Item-to-item cosine of co-consumption over users' latest items, the top ``neighbours`` per item.

    ``COOC_BLOCK`` items' rows of the item-by-item matrix at a time: the whole of it, with the copies its
    normalising made, took 2.3 GB for a moment at 20M interactions (138k users, 27k items), more than any other
    step of a stage. The counts are whole numbers, so each block's values are the whole matrix's to the bit.
    """
    rows = np.repeat(np.arange(len(latest)), latest.shape[1])
    flat = latest.ravel()
    taken = sp.csr_matrix(
        (np.ones(int((flat >= 0).sum()), np.float32), (rows[flat >= 0], flat[flat >= 0])),
        shape=(len(latest), n_items),
    )
    by_item = taken.T.tocsr()
    counts = np.asarray(taken.sum(axis=0)).ravel()
    norm = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    items = np.full((n_items, neighbours), -1, dtype=np.int64)
    weights = np.zeros((n_items, neighbours), dtype=np.float32)
    for first in range(0, n_items, COOC_BLOCK):
        block = slice(first, min(first + COOC_BLOCK, n_items))
        together = (by_item[block] @ taken).tocsr()
        together.setdiag(0, k=first)  # an item with itself
        together.eliminate_zeros()
        together = (sp.diags(norm[block]) @ together @ sp.diags(norm)).tocsr()
        for row in range(together.shape[0]):
            start, end = together.indptr[row], together.indptr[row + 1]
            data, index = together.data[start:end], together.indices[start:end]
            keep = np.lexsort((index, -data))[:neighbours]
            items[first + row, : len(keep)] = index[keep]
            weights[first + row, : len(keep)] = data[keep]
    return Neighbours(items, weights)
