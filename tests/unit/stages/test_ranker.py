"""The ranker's prior, and its per-row path contributions pinned against references computed another way."""

from __future__ import annotations

import numpy as np
import pytest
from catboost import CatBoost, Pool

from stages.feature_view import FeatureNames
from stages.ranker import PRIOR_OFFSET, Prior, Ranker, TreePaths


def trained(depth: int, categorical: bool = True, rows: int = 200) -> tuple[Ranker, np.ndarray, np.ndarray]:
    """A small seeded model; with ``categorical``, a 2-value (one-hot) and a 3-value (CTR) column."""
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(rows, 3)).astype(np.float32)
    colour = rng.choice(["a", "b", "c"], size=rows)
    side = rng.choice(["left", "right"], size=rows)
    target = numeric[:, 0] * 2 - numeric[:, 1] + (colour == "a") + 0.5 * (side == "left")
    names = FeatureNames(("x0", "x1", "x2"), ("colour", "side") if categorical else ())
    cats = np.stack([colour, side], axis=1).astype(object) if categorical else np.empty((rows, 0), dtype=object)
    params = {"iterations": 30, "depth": depth, "verbose": False, "random_seed": 0, "thread_count": 1}
    model = CatBoost({**params, "allow_writing_files": False})
    model.fit(Pool(Ranker.data(names, numeric, cats), label=target))
    return Ranker(model, names), numeric, cats


def test_path_contributions_add_up_to_the_score():
    ranker, numeric, categorical = trained(depth=3)
    contributions = ranker.contributions(numeric[:10], categorical[:10])
    scores = ranker.score(numeric[:10], categorical[:10])
    np.testing.assert_allclose(contributions.sum(axis=1) + ranker.paths.expected, scores, rtol=1e-4, atol=1e-4)
    # x0 drives the target most: it carries the largest contributions on average.
    assert np.abs(contributions).mean(axis=0).argmax() == 0


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_scores_from_leaves_equal_catboost_predict(depth: int):
    """The leaf values ``explain`` reads, summed along each row's leaves, give ``predict``'s scores, CTRs included:
    the contributions it reports add up to the score the row was ranked by."""
    ranker, numeric, categorical = trained(depth=depth)
    leaves = ranker.leaves(numeric, categorical)
    scores = (ranker.paths.scores(leaves) + ranker.baseline(numeric)).astype(np.float32)
    assert leaves.shape == (len(numeric), ranker.model.tree_count_)
    predicted = ranker.score(numeric, categorical)
    np.testing.assert_allclose(scores, predicted, rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.argsort(-scores, kind="stable"), np.argsort(-predicted, kind="stable"))


def test_path_contributions_equal_a_walk_down_each_tree():
    """The vectorised tables against the definition, one row, tree and split at a time.

    The walk finds each row's path from its raw features and the split borders
    (so it also pins which bit of CatBoost's leaf index is which split), and
    takes expected values straight from the leaf values and weights.
    """
    ranker, numeric, _ = trained(depth=4, categorical=False)
    model, rows = ranker.model, numeric[:25]
    leaves = np.asarray(model.calc_leaf_indexes(Pool(rows)), dtype=np.int64)
    counts = model.get_tree_leaf_counts()
    values = np.split(np.asarray(model.get_leaf_values()), np.cumsum(counts)[:-1])
    weights = np.split(np.asarray(model.get_leaf_weights()), np.cumsum(counts)[:-1])
    reference = np.zeros((len(rows), 3))
    for t in range(model.tree_count_):
        splits = [split.split(", bin=") for split in model._get_tree_splits(t, None)]  # "<column>, bin=<border>"

        def expected(taken: list[int], t: int = t) -> float:
            """Weighted mean leaf value over the leaves whose first splits went as ``taken``."""
            under = [leaf for leaf in range(counts[t]) if all((leaf >> d) & 1 == b for d, b in enumerate(taken))]
            return float(np.average(values[t][under], weights=np.maximum(weights[t][under], 1e-300)))

        for r, row in enumerate(rows):
            taken = [int(row[int(name)] > float(border)) for name, border in splits]
            assert sum(b << d for d, b in enumerate(taken)) == leaves[r, t]
            for d, (name, _) in enumerate(splits):
                reference[r, int(name)] += expected(taken[: d + 1]) - expected(taken[:d])
    np.testing.assert_allclose(ranker.path_contributions(leaves), reference, rtol=1e-5, atol=1e-6)


def test_one_split_trees_give_catboost_shap_values():
    """With one split per tree, path contributions and SHAP values are the same thing: CatBoost's own answer.

    Categorical splits included (one-hot and CTR), so their credit goes to the right column.
    """
    ranker, numeric, categorical = trained(depth=1)
    data = Ranker.data(ranker.names, numeric[:20], categorical[:20])
    shap = ranker.model.get_feature_importance(Pool(data), type="ShapValues")
    np.testing.assert_allclose(ranker.contributions(numeric[:20], categorical[:20]), shap[:, :-1], atol=1e-5)
    np.testing.assert_allclose(ranker.paths.expected, shap[0, -1], atol=1e-5)


class ThreeTrees:
    """Just enough of a CatBoost model for :meth:`TreePaths.of`: trees of depth 2, 1 and 0 (a lone leaf)."""

    def get_all_params(self) -> dict:
        return {"grow_policy": "SymmetricTree"}

    def get_tree_leaf_counts(self) -> np.ndarray:
        return np.array([4, 2, 1])

    def _get_tree_splits(self, tree: int, pool: Pool) -> list[str]:
        return [["a, bin=0.5", "b, bin=0.5"], ["b, bin=0.5"], []][tree]

    def get_leaf_values(self) -> np.ndarray:
        return np.array([0.0, 1, 2, 3, 0, 4, 5])

    def get_leaf_weights(self) -> np.ndarray:
        return np.array([1.0, 1, 1, 1, 3, 1, 2])

    def get_scale_and_bias(self) -> tuple[float, float]:
        return 1.0, 0.5


def test_trees_of_different_depths_worked_by_hand():
    """CatBoost stops a tree early when no split helps; such models must explain too (they raised before)."""
    paths = TreePaths.of(ThreeTrees(), FeatureNames(("a", "b", "c"), ()))
    assert paths.expected == pytest.approx(0.5 + 1.5 + 1.0 + 5.0)
    # Leaf 3 (a and b true): a moves tree 0 from 1.5 to 2, b from 2 to 3; leaf 1 of tree 1: b from 1 to 4.
    # Leaf 2 (a false, b true): a moves 1.5 to 1, b 1 to 2; leaf 0 of tree 1: b from 1 to 0.
    contributions = paths.contributions(np.array([[3, 1, 0], [2, 0, 0]]))
    np.testing.assert_allclose(contributions, [[0.5, 4.0, 0.0], [-0.5, 0.0, 0.0]])
    # Scores: the bias plus the leaf each row lands in, tree by tree (padding leaves never reached).
    np.testing.assert_allclose(paths.scores(np.array([[3, 1, 0], [2, 0, 0]])), [0.5 + 3 + 4 + 5, 0.5 + 2 + 0 + 5])


def test_the_prior_reads_popularity_as_logs_and_the_candidate_score_as_it_is():
    names = FeatureNames(("pop_7d", "pop_all", "als_score", "other"), ())
    rows = np.array([[0.01, 0.02, -0.5, 9.0], [np.nan, -1.0, np.nan, 9.0]], dtype=np.float32)
    prior = Prior(columns=("pop_7d", "pop_all", "als_score"), weights=(1.0, 2.0, 3.0), intercept=0.5, centers=(0, 0, 0))
    expected = [
        np.log(0.01 + PRIOR_OFFSET) + 2 * np.log(0.02 + PRIOR_OFFSET) + 3 * -0.5 + 0.5,
        # a missing or negative share counts as none taken; a missing score as 0
        3 * np.log(PRIOR_OFFSET) + 0.5,
    ]
    np.testing.assert_allclose(prior.score(rows, names), expected, rtol=1e-5)
    assert rows[0, 2] == np.float32(-0.5) and np.isnan(rows[1, 0])  # the rows themselves are left as they were


def test_a_prior_on_popularity_alone_scores_as_it_did():
    """A model card written before the prior read the candidate score still serves the same scores."""
    names = FeatureNames(("als_score", "pop_30d", "pop_all"), ())
    rows = np.array([[4.0, 0.1, 0.2]], dtype=np.float32)
    prior = Prior(columns=("pop_30d", "pop_all"), weights=(1.0, -1.0), intercept=0.0, centers=(0, 0))
    np.testing.assert_allclose(
        prior.score(rows, names), [np.log(0.1 + PRIOR_OFFSET) - np.log(0.2 + PRIOR_OFFSET)], rtol=1e-5
    )


def test_the_prior_weighs_the_candidate_score_where_it_tells_what_is_taken_next():
    """Where taste, not popularity, decides what is taken, the fitted prior leans on the candidate score."""
    rng = np.random.default_rng(0)
    rows = 4000
    popularity = rng.uniform(0.0, 0.01, rows)
    score = rng.normal(size=rows)
    taken = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(3 * score - 2)))).astype(np.float32)
    numeric = np.column_stack([popularity, score]).astype(np.float32)
    prior = Prior.fit(numeric, FeatureNames(("pop_all", "als_score"), ()), taken)
    assert prior is not None and prior.columns == ("pop_all", "als_score")
    assert prior.weights[1] == pytest.approx(3.0, rel=0.15)
    assert abs(prior.weights[0]) < 0.2


@pytest.mark.parametrize(
    "columns, weights", [(("als_score", "pop_all"), (1.0, 1.0)), (("pop_all", "als_score"), (1.0,))]
)
def test_a_prior_that_could_not_score_is_refused_when_read(columns, weights):
    with pytest.raises(ValueError):
        Prior(columns=columns, weights=weights, intercept=0.0, centers=(0.0,) * len(columns))
