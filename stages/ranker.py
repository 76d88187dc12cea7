"""The re-ranking stage: a prior (popularity and the candidate score), and CatBoost over (user, candidate) feature
rows on top of it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from catboost import CatBoost, FeaturesData, Pool
from pydantic import BaseModel, ConfigDict, model_validator
from scipy.optimize import minimize

from stages.feature_view import FeatureNames
from stages.symmetric_trees import CategoryHashes, SymmetricTrees, Unsupported

logger = logging.getLogger(__name__)

# The item popularity columns the prior reads as logs (features/families/item_activity.py: each window's share of
# its interactions), and what is added to each before its log: shares of 0 are common, and the gap between none and
# a few takes in a window is what tells the prior most.
LOGGED_PRIOR_COLUMNS = ("pop_1d", "pop_7d", "pop_30d", "pop_all")
# ... and the candidate model's score, read as it is (a dot product, negative as often as not).
RAW_PRIOR_COLUMNS = ("als_score",)
PRIOR_COLUMNS = LOGGED_PRIOR_COLUMNS + RAW_PRIOR_COLUMNS
PRIOR_OFFSET = 1e-6
PRIOR_L2 = 1e-3  # a touch of ridge: the windows are collinear, and a tie must not swing the weights apart


class Prior(BaseModel):
    """The ranker's starting score: a logistic model of "taken next" on the item's popularity windows (logged) and
    the candidate model's score.

    Popularity and the candidate source are the baselines a recommender must
    beat, and on a few hundred users per cut a tree model that learns them from
    scratch each time wins at some cuts and loses at others. Fitted first, on
    the same rows, the prior is the score CatBoost boosts from (``baseline`` in
    its pool), so the trees learn only what improves on both. Serving adds it
    back: the ranker's score is the prior plus the trees. On popularity alone
    it held back the trees where taste, not popularity, decides: at 20M
    synthetic interactions the two-stage model ranked below its own ALS
    (docs/quality.md, "The prior reads the ALS score too").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    centers: tuple[float, ...]  # each input's training mean, for explanations (a contribution is w * (x - mean))

    @model_validator(mode="after")
    def _readable(self) -> Prior:
        """A card whose prior could not score is refused when it is read, not at the first request."""
        if not len(self.columns) == len(self.weights) == len(self.centers):
            raise ValueError("the prior's columns, weights and centers differ in length")
        _n_logged(self.columns)
        return self

    @classmethod
    def fit(cls, numeric: np.ndarray, names: FeatureNames, labels: np.ndarray) -> Prior | None:
        """Logistic regression of the labels on the prior's columns the rows have (None: they have none)."""
        columns = tuple(c for c in PRIOR_COLUMNS if c in names.numeric)
        if not columns or len(np.unique(labels)) < 2:
            return None
        inputs = _prior_inputs(numeric, [names.numeric.index(c) for c in columns], _n_logged(columns))
        design = np.column_stack([inputs, np.ones(len(inputs))])
        labels = np.asarray(labels, dtype=np.float64)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            """Mean log loss plus the ridge, and its gradient."""
            z = design @ w
            ridge = np.r_[w[:-1], 0.0]
            value = -(labels * z - np.logaddexp(0.0, z)).mean()
            gradient = design.T @ (1.0 / (1.0 + np.exp(-z)) - labels) / len(labels)
            return value + PRIOR_L2 * (ridge @ ridge), gradient + 2 * PRIOR_L2 * ridge

        fitted = minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B").x
        return cls(
            columns=columns,
            weights=tuple(float(w) for w in fitted[:-1]),
            intercept=float(fitted[-1]),
            centers=tuple(float(c) for c in inputs.mean(axis=0)),
        )

    def score(self, numeric: np.ndarray, names: FeatureNames) -> np.ndarray:
        """The prior's raw score (log-odds) of each row (a few microseconds for a request's rows)."""
        return self._inputs(numeric, names) @ self._weights + self.intercept

    def contributions(self, numeric: np.ndarray, names: FeatureNames) -> np.ndarray:
        """Rows x prior columns: what each window adds against its training mean (for explanations)."""
        return (self._inputs(numeric, names) - np.asarray(self.centers)) * self._weights

    @cached_property
    def _weights(self) -> np.ndarray:
        return np.asarray(self.weights)

    def _inputs(self, numeric: np.ndarray, names: FeatureNames) -> np.ndarray:
        columns = self._columns.get(names)
        if columns is None:
            columns = self._columns[names] = [names.numeric.index(c) for c in self.columns]
        return _prior_inputs(numeric, columns, self._n_logged)

    @cached_property
    def _n_logged(self) -> int:
        return _n_logged(self.columns)

    @cached_property
    def _columns(self) -> dict[FeatureNames, list[int]]:
        """Where the prior's columns sit among a ranker's, per column layout (looked up once, not per request)."""
        return {}


def _n_logged(columns: tuple[str, ...]) -> int:
    """How many of the prior's columns, from the first, are read as logs (the popularity windows come first)."""
    logged = sum(c in LOGGED_PRIOR_COLUMNS for c in columns)
    if columns[:logged] != tuple(c for c in columns if c in LOGGED_PRIOR_COLUMNS):
        raise ValueError(f"the prior's popularity columns must come first: {columns}")
    return logged


def _prior_inputs(numeric: np.ndarray, columns: list[int], logged: int) -> np.ndarray:
    """The prior's inputs: log(x + offset) of the first ``logged`` columns (a missing or negative value counts as
    0), the rest as they are (missing: 0)."""
    values = numeric[:, columns]
    head = values[:, :logged]
    np.fmax(head, np.float32(0.0), out=head)  # fmax: NaN gives the other operand
    head += np.float32(PRIOR_OFFSET)
    np.log(head, out=head)
    if logged < len(columns):
        raw = values[:, logged:]
        np.copyto(raw, np.float32(0.0), where=np.isnan(raw))  # not nan_to_num: six numpy calls more for no infinity
    return values


RANKER_FILE = "ranker.cbm"  # in the ranker's model folder: the main ranker ...
VISITOR_RANKER_FILE = "visitor_ranker.cbm"  # ... and, when trained, the one for visitors with recent items ...
RECENT_RANKER_FILE = "recent_ranker.cbm"  # ... and the one for known users' requests with recent items


class Ranker:
    """A trained CatBoost model, the feature columns it was trained on, and the prior it boosts from."""

    def __init__(self, model: CatBoost, names: FeatureNames, prior: Prior | None = None) -> None:
        self.model = model
        self.names = names
        self.prior = prior

    def save(self, path: Path) -> None:
        """CatBoost's own binary format (no pickle); names and prior travel in the model card."""
        self.model.save_model(str(path), format="cbm")

    @classmethod
    def load(cls, path: Path, names: FeatureNames, prior: Prior | None) -> Ranker:
        model = CatBoost()
        model.load_model(str(path), format="cbm")
        return cls(model, names, prior)

    @staticmethod
    def data(names: FeatureNames, numeric: np.ndarray, categorical: np.ndarray) -> FeaturesData:
        """CatBoost's zero-copy input: numeric block first, categorical after.

        Column-major (Fortran order), which CatBoost reads column by column in
        the calling thread. A row-major block goes through a thread CatBoost
        starts for every pool; in the service process building the pool took
        0.6 ms at p50 and 1.6-2.0 ms at p99 that way, 0.3 and 0.6 ms now.
        """
        return FeaturesData(
            num_feature_data=np.asfortranarray(numeric, dtype=np.float32),
            cat_feature_data=categorical if categorical.shape[1] else None,
            num_feature_names=list(names.numeric),
            cat_feature_names=list(names.categorical) if categorical.shape[1] else None,
        )

    def score(self, numeric: np.ndarray, categorical: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Raw ranking scores, higher is better.

        With ``codes`` (the categorical values' CatBoost hashes, :class:`CategoryHashes`) the trees run as numpy
        arrays (:class:`SymmetricTrees`: a request's rows without CatBoost's per-call set-up, the same scores to the
        bit); otherwise, or for a model those arrays cannot read, CatBoost scores them, on one thread: the service
        scales with workers, not threads.
        """
        if len(numeric) == 0:
            return np.empty(0, dtype=np.float32)
        trees = self.trees
        if codes is not None and trees is not None:
            raw = trees.raw(trees.leaves(numeric, codes))
        else:
            data = self.data(self.names, numeric, categorical)
            raw = self.model.predict(data, prediction_type="RawFormulaVal", thread_count=1)
        return (raw + self.baseline(numeric)).astype(np.float32)

    def category_hashes(self, values: Iterable[str]) -> CategoryHashes:
        """CatBoost's hash of each of ``values``, for :meth:`score`'s ``codes`` (every CatBoost model hashes alike);
        none for a model CatBoost alone scores."""
        return CategoryHashes.of(self.model, self.names, values) if self.trees is not None else CategoryHashes({})

    @cached_property
    def trees(self) -> SymmetricTrees | None:
        """The model as numpy arrays (built once, ~35 ms for 150 trees); ``None`` when it uses what they cannot
        evaluate, and CatBoost scores every row."""
        try:
            return SymmetricTrees.of(self.model, self.names)
        except (Unsupported, KeyError, IndexError, TypeError, ValueError) as exc:  # an export it does not know
            logger.info("the ranker is scored by CatBoost alone: %s", exc)
            return None

    def baseline(self, numeric: np.ndarray) -> np.ndarray | float:
        """The prior's score per row (0 without a prior): what the trees were boosted from."""
        return 0.0 if self.prior is None else self.prior.score(numeric, self.names)

    def leaves(self, numeric: np.ndarray, categorical: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Each row's leaf in every tree (for :meth:`path_contributions`): one more pass over the trees, for the
        rows of a page that asks for ``explain`` only (their scores come from :meth:`score`); ``codes`` as there."""
        if len(numeric) == 0:
            return np.empty((0, self.model.tree_count_), dtype=np.int64)
        trees = self.trees
        if codes is not None and trees is not None:
            return trees.leaves(numeric, codes).T.astype(np.int64)
        # FeaturesData, not a Pool: CatBoost then builds the pool with the call's one thread, as ``predict`` does
        # (a Pool built here would default to a thread pool over every core: a 1 ms tail on explain).
        data = self.data(self.names, numeric, categorical)
        return np.asarray(self.model.calc_leaf_indexes(data, thread_count=1), dtype=np.int64)

    def path_contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Per-row feature contributions (rows x features): what each feature added to each row's score.

        Path contributions (Saabas): in every tree, each split on a row's path
        adds the change in the expected leaf value it causes to its feature, so
        a row's contributions sum to its score minus the model's expected score.
        A few numpy gathers over the rows' leaves, where CatBoost's ``ShapValues``
        take 75-105 ms for ten rows of the MovieLens model (``Approximate``: 3 ms).
        """
        return self.paths.contributions(leaves)

    @cached_property
    def paths(self) -> TreePaths:
        """The trees as arrays for :meth:`path_contributions`, built once per model (tens of ms, not per request)."""
        return TreePaths.of(self.model, self.names)

    def contributions(
        self, numeric: np.ndarray, categorical: np.ndarray, codes: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`path_contributions` for rows given as features, plus the prior's per column."""
        return self.with_prior(self.path_contributions(self.leaves(numeric, categorical, codes)), numeric)

    def with_prior(self, contributions: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """Tree contributions with the prior's added to its columns, so "popular this week" or "fits your taste" can be
        a reason."""
        if self.prior is None:
            return contributions
        columns = [self.names.all.index(c) for c in self.prior.columns]
        contributions[:, columns] += self.prior.contributions(numeric, self.names).astype(contributions.dtype)
        return contributions


class TreePaths:
    """A symmetric-tree CatBoost model as arrays, for per-row path contributions.

    Everything a request needs is precomputed here, once per model: for each
    (tree, leaf), the feature of each split on the path to that leaf and what
    that split changes the expected value by. A request's contributions are then
    one gather over its rows' leaves and one ``bincount``: no Python per tree or
    per row. Trees shallower than the deepest (CatBoost stops a tree when no
    split helps) are padded with splits that change nothing.
    """

    def __init__(
        self,
        features: np.ndarray,
        deltas: np.ndarray,
        n_features: int,
        expected: float,
        values: np.ndarray,
        bias: float,
    ) -> None:
        self.features = features  # (trees, depth): the feature each level splits on; n_features for padding
        self.deltas = deltas  # (trees * 2**depth, depth): row t * 2**depth + leaf, the change at each split
        self.n_features = n_features
        self.expected = expected  # the model's expected score: the sum of each tree's weighted mean leaf value
        self.values = values  # (trees * 2**depth,): row t * 2**depth + leaf, the scaled leaf value (0 for padding)
        self.bias = bias
        self.offsets = np.arange(len(features), dtype=np.int64) * (1 << features.shape[1])
        self._bins = self._bins_for(100)  # grown on demand; 100 covers any page (k <= 100)

    @classmethod
    def of(cls, model: CatBoost, names: FeatureNames) -> TreePaths:
        """The arrays of a trained model; ``ValueError`` unless its trees are symmetric (CatBoost's default)."""
        if model.get_all_params().get("grow_policy", "SymmetricTree") != "SymmetricTree":
            raise ValueError("path contributions need symmetric trees")
        counts = np.asarray(model.get_tree_leaf_counts(), dtype=np.int64)
        depths = np.log2(counts).astype(np.int64)
        if not np.array_equal(1 << depths, counts):
            raise ValueError("path contributions need symmetric trees")
        index = {name: j for j, name in enumerate(names.all)}
        # Split descriptions need a pool only to name categorical values; one blank row does (names are all we read).
        blank = Pool(
            Ranker.data(
                names,
                np.zeros((1, len(names.numeric)), dtype=np.float32),
                np.full((1, len(names.categorical)), "", dtype=object),
            )
        )
        top = int(depths.max(initial=0))
        n_features = len(names.all)
        features = np.full((len(counts), top), n_features, dtype=np.int64)
        deltas = np.zeros((len(counts), 1 << top, top))
        padded = np.zeros((len(counts), 1 << top))
        values = np.asarray(model.get_leaf_values(), dtype=np.float64)
        weights = np.asarray(model.get_leaf_weights(), dtype=np.float64)
        scale, bias = model.get_scale_and_bias()
        starts = np.concatenate([[0], np.cumsum(counts)])
        expected = float(bias)
        for t, depth in enumerate(depths.tolist()):
            # "{cat_a, cat_b} pr0..." is a CTR over categorical features (credited to the first); else "name, bin=...".
            features[t, :depth] = [index[_split_feature(split)] for split in model._get_tree_splits(t, blank)]
            leaf = slice(starts[t], starts[t + 1])
            padded[t, : 1 << depth] = scale * values[leaf]
            means = _prefix_means(scale * values[leaf], weights[leaf], depth)  # (depth + 1, leaves)
            expected += float(means[0, 0])
            deltas[t, : 1 << depth, :depth] = np.diff(means, axis=0).T
        return cls(features, deltas.reshape(-1, top), n_features, expected, padded.ravel(), float(bias))

    def scores(self, leaves: np.ndarray) -> np.ndarray:
        """Raw scores (float64) of rows whose leaf index in each tree is ``leaves`` (rows x trees)."""
        return np.take(self.values, leaves + self.offsets).sum(axis=1) + self.bias

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Rows x features contributions for rows whose leaf index in each tree is ``leaves`` (rows x trees)."""
        rows = len(leaves)
        if rows > len(self._bins):
            self._bins = self._bins_for(rows)
        width = self.n_features + 1
        delta = np.take(self.deltas, leaves + self.offsets, axis=0)  # (rows, trees, depth); take beats [] here
        out = np.bincount(self._bins[:rows].ravel(), weights=delta.ravel(), minlength=rows * width)
        return out.reshape(rows, width)[:, : self.n_features].astype(np.float32)

    def _bins_for(self, rows: int) -> np.ndarray:
        """(rows, trees, depth): where each split's change lands in a flat rows x (features + 1) result.

        One more column than features takes the padding splits' zeros.
        """
        return self.features + (np.arange(rows) * (self.n_features + 1))[:, None, None]


def _prefix_means(values: np.ndarray, weights: np.ndarray, depth: int) -> np.ndarray:
    """(depth + 1, leaves): for each leaf, the weighted mean value of the leaves that share its first d splits.

    Bit d of a leaf index is the outcome of split d, so the leaves sharing the
    first d outcomes are those with the same low d bits.
    """
    leaves = np.arange(1 << depth)
    out = np.empty((depth + 1, len(leaves)))
    for d in range(depth + 1):
        group = leaves & ((1 << d) - 1)
        total = np.bincount(group, weights=weights * values, minlength=1 << d)
        mass = np.bincount(group, weights=weights, minlength=1 << d)
        out[d] = (total / np.maximum(mass, 1e-12))[group]
    return out


def _split_feature(split: str) -> str:
    split = split.strip()
    if split.startswith("{"):
        return split[1 : split.index("}")].split(",")[0].strip()
    return split.split(", ")[0]
