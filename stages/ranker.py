"""The re-ranking stage: CatBoost over (user, candidate) feature rows."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from catboost import CatBoost, FeaturesData, Pool

from stages.feature_view import FeatureNames


class Ranker:
    """A trained CatBoost model and the feature columns it was trained on."""

    def __init__(self, model: CatBoost, names: FeatureNames) -> None:
        self.model = model
        self.names = names
        self._paths: TreePaths | None = None

    @staticmethod
    def data(names: FeatureNames, numeric: np.ndarray, categorical: np.ndarray) -> FeaturesData:
        """CatBoost's zero-copy input: numeric block first, categorical after."""
        return FeaturesData(
            num_feature_data=np.ascontiguousarray(numeric, dtype=np.float32),
            cat_feature_data=categorical if categorical.shape[1] else None,
            num_feature_names=list(names.numeric),
            cat_feature_names=list(names.categorical) if categorical.shape[1] else None,
        )

    def score(self, numeric: np.ndarray, categorical: np.ndarray, threads: int = 1) -> np.ndarray:
        """Raw ranking scores, higher is better.

        One thread by default: the service scales with workers, not threads.
        """
        if len(numeric) == 0:
            return np.empty(0, dtype=np.float32)
        data = self.data(self.names, numeric, categorical)
        return self.model.predict(data, prediction_type="RawFormulaVal", thread_count=threads).astype(np.float32)

    def score_with_leaves(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores :meth:`score` gives, and each row's leaf in every tree (for :meth:`path_contributions`)."""
        if len(numeric) == 0:
            return np.empty(0, dtype=np.float32), np.empty((0, self.model.tree_count_), dtype=np.int64)
        pool = Pool(self.data(self.names, numeric, categorical))
        if self._paths is None:
            self._paths = TreePaths.of(self.model, pool, self.names.all)
        scores = self.model.predict(pool, prediction_type="RawFormulaVal", thread_count=1).astype(np.float32)
        return scores, np.asarray(self.model.calc_leaf_indexes(pool, thread_count=1), dtype=np.int64)

    def path_contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Per-row feature contributions (rows x features): what each feature added to each row's score.

        Path contributions (Saabas): in every tree, each split on a row's path
        adds the change in the expected leaf value it causes to its feature, so
        a row's contributions sum to its score minus the model's expected score.
        A few numpy gathers over the rows' leaves, where CatBoost's ``ShapValues``
        take 75-105 ms for ten rows of the MovieLens model (``Approximate``: 3 ms).
        """
        return self._paths.contributions(leaves)

    def contributions(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """:meth:`path_contributions` for rows given as features."""
        return self.path_contributions(self.score_with_leaves(numeric, categorical)[1])


class TreePaths:
    """A symmetric-tree CatBoost model as arrays: each tree's split features and expected value at each depth."""

    def __init__(self, features: np.ndarray, means: np.ndarray, n_features: int) -> None:
        self.features = features  # (trees, depth): the feature each level splits on
        self.means = means  # (trees, depth + 1, 2**depth): expected leaf value given the first d splits' outcomes
        self.n_features = n_features

    @classmethod
    def of(cls, model: CatBoost, pool: Pool, names: list[str]) -> TreePaths:
        counts = np.asarray(model.get_tree_leaf_counts())
        if len(set(counts.tolist())) != 1:
            raise ValueError("path contributions need symmetric trees of one depth")
        trees, depth = len(counts), int(np.log2(counts[0]))
        index = {name: j for j, name in enumerate(names)}
        # "{cat_a, cat_b} pr0..." is a CTR over categorical features (credited to the first); else "name, bin=...".
        features = np.array(
            [[index[_split_feature(split)] for split in model._get_tree_splits(t, pool)] for t in range(trees)],
            dtype=np.int64,
        ).reshape(trees, depth)
        values = np.asarray(model.get_leaf_values(), dtype=np.float64).reshape(trees, 2**depth)
        weights = np.asarray(model.get_leaf_weights(), dtype=np.float64).reshape(trees, 2**depth)
        scale = model.get_scale_and_bias()[0]
        leaves = np.arange(2**depth)
        means = np.zeros((trees, depth + 1, 2**depth))
        for d in range(depth + 1):
            for prefix in range(2**d):
                under = (leaves & ((1 << d) - 1)) == prefix  # leaf index bit d: the outcome of split d
                total = weights[:, under].sum(axis=1)
                means[:, d, prefix] = (
                    scale * (values[:, under] * weights[:, under]).sum(axis=1) / np.maximum(total, 1e-12)
                )
        return cls(features, means, len(names))

    @cached_property
    def _deltas(self) -> np.ndarray:
        """(trees, leaves, depth): what each split on the path to a leaf changes the expected value by."""
        depth = self.features.shape[1]
        leaves = np.arange(self.means.shape[2])
        prefixes = leaves[:, None] & ((1 << np.arange(depth + 1)) - 1)  # (leaves, depth + 1)
        expected = self.means[:, np.arange(depth + 1)[None, :], prefixes]  # (trees, leaves, depth + 1)
        return np.diff(expected, axis=2)

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Rows x features contributions for rows whose leaf index in each tree is ``leaves`` (rows x trees)."""
        rows, trees = leaves.shape
        delta = self._deltas[np.arange(trees)[None, :], leaves]  # (rows, trees, depth)
        flat = np.arange(rows)[:, None, None] * self.n_features + self.features[None, :, :]
        out = np.bincount(flat.ravel(), weights=delta.ravel(), minlength=rows * self.n_features)
        return out.reshape(rows, self.n_features).astype(np.float32)


def _split_feature(split: str) -> str:
    split = split.strip()
    if split.startswith("{"):
        return split[1 : split.index("}")].split(",")[0].strip()
    return split.split(", ")[0]
