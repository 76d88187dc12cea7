"""Candidate generation: implicit ALS, its id maps, seen items, popularity.

Saved as plain files (``.npz``, no pickle) so the serving image needs no
training code: ``als.npz`` is the CPU ALS class, ``ids.npz`` the id maps,
``seen.npz`` each user's interacted items (CSR), ``popular.npy`` the
cold-start ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from features.schema import Columns

SCORE_CHUNK = 1024  # users scored at once: 1024 x 27k items of float32 is about 110 MB


@dataclass(frozen=True)
class ALSParams:
    """Hyperparameters of the candidate model (recorded in its metadata)."""

    factors: int = 32
    regularization: float = 0.1
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 42


@dataclass
class CandidateBatch:
    """Top-N candidates for a batch of users: item indices, scores, ranks (1-based)."""

    items: list[np.ndarray]
    scores: list[np.ndarray]


class CandidateModel:
    """ALS over the user-item matrix plus what serving needs around it."""

    def __init__(
        self,
        als: AlternatingLeastSquares,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        seen: sp.csr_matrix,
        popular: np.ndarray,
        params: ALSParams,
    ) -> None:
        self.als = als
        self.user_ids = np.asarray(user_ids, dtype=object)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}
        self.seen = seen
        self.popular = popular
        self.params = params

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def fit(cls, interactions: pd.DataFrame, params: ALSParams = ALSParams()) -> CandidateModel:
        """Fit ALS on weighted interactions (repeats add up)."""
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
        counts = np.asarray((matrix > 0).sum(axis=0)).ravel()
        popular = np.lexsort((np.arange(len(counts)), -counts)).astype(np.int64)
        return cls(
            als,
            np.asarray(users.categories, dtype=object),
            np.asarray(items.categories, dtype=object),
            matrix,
            popular,
            params,
        )

    def save(self, directory: Path) -> None:
        """Write the model's files into ``directory`` (a BentoML model folder)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.als.save(str(directory / "als.npz"))
        np.savez(
            directory / "ids.npz",
            users=self.user_ids.astype(str),
            items=self.item_ids.astype(str),
        )
        sp.save_npz(directory / "seen.npz", self.seen)
        np.save(directory / "popular.npy", self.popular, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, params: ALSParams) -> CandidateModel:
        """Read what :meth:`save` wrote, without pickle."""
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares.load(str(directory / "als.npz"))
        with np.load(directory / "ids.npz", allow_pickle=False) as ids:
            users, items = ids["users"].astype(object), ids["items"].astype(object)
        seen = sp.load_npz(directory / "seen.npz").tocsr()
        popular = np.load(directory / "popular.npy", allow_pickle=False)
        return cls(als, users, items, seen, popular, params)

    def counts(self) -> dict[str, int]:
        """Users, items and interactions it was fitted on (for the model card)."""
        return {"n_users": len(self.user_ids), "n_items": len(self.item_ids), "n_interactions": int(self.seen.nnz)}

    def top_n(
        self,
        users: np.ndarray,
        n: int,
        exclude_seen: bool = True,
        exclude: list[np.ndarray] | None = None,
    ) -> CandidateBatch:
        """Top-``n`` items per known user (model indices), best first.

        ``exclude`` holds, per user, extra item indices to leave out. Users are
        scored in chunks so a whole catalogue times all users never sits in memory.
        """
        batch = CandidateBatch([], [])
        for start in range(0, len(users), SCORE_CHUNK):
            chunk = slice(start, start + SCORE_CHUNK)
            part = self._top_n(users[chunk], n, exclude_seen, exclude[chunk] if exclude else None)
            batch.items += part.items
            batch.scores += part.scores
        return batch

    def _top_n(self, users: np.ndarray, n: int, exclude_seen: bool, exclude: list[np.ndarray] | None) -> CandidateBatch:
        # A plain dot product rather than implicit's recommend(): it takes a
        # different exclusion list per user in one batched call.
        scores = self.als.user_factors[users] @ self.als.item_factors.T
        if exclude_seen:
            rows = self.seen[users]
            scores[np.repeat(np.arange(len(users)), np.diff(rows.indptr)), rows.indices] = -np.inf
        if exclude:
            for row, items in enumerate(exclude):
                scores[row, items] = -np.inf
        n = min(n, self.n_items)
        top = (
            np.argpartition(-scores, n - 1, axis=1)[:, :n]
            if n < self.n_items
            else np.tile(np.arange(self.n_items), (len(users), 1))
        )
        out_items, out_scores = [], []
        for row in range(len(users)):
            picked = top[row]
            picked_scores = scores[row, picked]
            order = np.lexsort((picked, -picked_scores))
            picked, picked_scores = picked[order], picked_scores[order]
            keep = np.isfinite(picked_scores)
            out_items.append(picked[keep])
            out_scores.append(picked_scores[keep].astype(np.float32))
        return CandidateBatch(out_items, out_scores)

    def similar_items(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by cosine of ALS item factors (the item itself excluded)."""
        ids, scores = self.als.similar_items(item, N=n + 1)
        keep = ids != item
        return ids[keep][:n].astype(np.int64), scores[keep][:n].astype(np.float32)
