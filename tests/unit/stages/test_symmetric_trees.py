"""The numpy trees against CatBoost itself: the same leaf in every tree and the same score to the bit, on models
with every split kind the ranker's models have (float borders, NaNs, one-hot values, CTRs of one and of several
categorical columns), and CatBoost kept for what the arrays do not read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoost, Pool

from stages.feature_view import FeatureNames
from stages.ranker import Ranker
from stages.symmetric_trees import CategoryHashes, SymmetricTrees, Unsupported

NAMES = FeatureNames(("x0", "x1", "x2"), ("city", "colour", "side"))


def _rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric columns (x2 often missing), a many-valued, a three-valued and a two-valued category, a target."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 3)).astype(np.float32)
    numeric[rng.random(rows) < 0.3, 2] = np.nan
    city = rng.choice([f"city-{i}" for i in range(40)], size=rows)
    colour = rng.choice(["a", "b", "c"], size=rows)
    side = rng.choice(["left", "right"], size=rows)
    target = (
        numeric[:, 0] * 2
        - numeric[:, 1]
        + (colour == "a")
        + 0.5 * (side == "left")
        + np.isnan(numeric[:, 2])
        + (np.char.str_len(city.astype(str)) % 3 == 0) * (colour == "b")
    )
    return numeric, np.stack([city, colour, side], axis=1).astype(object), target


def _model(**params: object) -> CatBoost:
    numeric, categorical, target = _rows(600, seed=0)
    base = {"iterations": 40, "depth": 6, "verbose": False, "random_seed": 0, "thread_count": 1}
    model = CatBoost({**base, **params, "allow_writing_files": False})
    model.fit(Pool(Ranker.data(NAMES, numeric, categorical), label=target))
    return model


def _unseen_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows the model never saw, with categories it never saw among them (their CTRs have no counts)."""
    numeric, categorical, _ = _rows(500, seed=1)
    categorical[::7, 0] = "a city training never had"
    categorical[::11, 1] = "d"
    return numeric, categorical


@pytest.mark.parametrize(
    "params",
    [
        {},  # CatBoost's defaults: Borders and Counter CTRs, the two-valued column one-hot
        {"max_ctr_complexity": 1, "one_hot_max_size": 1},  # every category through CTRs
        # CTRs over a category with borders crossed and with another category's value; NaN above every border
        {"max_ctr_complexity": 3, "depth": 4, "nan_mode": "Max"},
        {"depth": 1},
    ],
)
def test_leaves_and_scores_equal_catboost_to_the_bit(params: dict[str, object]):
    model = _model(**params)
    trees = SymmetricTrees.of(model, NAMES)
    numeric, categorical = _unseen_rows()
    codes = CategoryHashes.of(model, NAMES, categorical.ravel().tolist()).codes(categorical)
    assert codes is not None
    leaves = trees.leaves(numeric, codes)
    data = Ranker.data(NAMES, numeric, categorical)
    assert np.array_equal(leaves.T, np.asarray(model.calc_leaf_indexes(data, thread_count=1)))
    assert np.array_equal(trees.raw(leaves), model.predict(data, prediction_type="RawFormulaVal", thread_count=1))


def test_the_default_model_is_read_with_ctrs_and_one_hot_splits():
    """The case the ranker's own models are (CatBoost's defaults): not skipped above."""
    trees = SymmetricTrees.of(_model(), NAMES)
    assert len(trees.onehot_columns) and len(trees.ctr_of_split)


@pytest.mark.parametrize("params", [{}, {"max_ctr_complexity": 3, "depth": 4}])
def test_rows_that_share_their_categories_give_what_each_gives_alone(params: dict[str, object]):
    """A lone user's rows share the user's categories: looked up once (CTRs keyed by categories alone; those with
    numeric borders in their key row by row), the same leaves as row by row."""
    model = _model(**params)
    trees = SymmetricTrees.of(model, NAMES)
    numeric, categorical = _unseen_rows()
    categorical[:] = categorical[3]
    hashes = CategoryHashes.of(model, NAMES, categorical.ravel().tolist())
    codes = hashes.codes(categorical)
    assert codes is not None and codes.strides[0] == 0  # one row, seen as many
    together = trees.leaves(numeric, codes)
    alone = np.concatenate(
        [trees.leaves(numeric[i : i + 1], hashes.codes(categorical[i : i + 1])) for i in range(40)], 1
    )
    assert np.array_equal(together[:, :40], alone)


def test_a_value_without_a_hash_sends_the_rows_to_catboost():
    model = _model()
    ranker = Ranker(model, NAMES)
    _, categorical = _unseen_rows()
    hashes = ranker.category_hashes(["city-1", "a", "left"])
    assert hashes.codes(categorical) is None
    assert hashes.codes(np.array([["city-1", "a", "left"]], dtype=object)) is not None
    assert hashes.codes(np.array([["city-1", 3, "left"]], dtype=object)) is None  # not a string


def test_the_ranker_scores_alike_either_way():
    """``Ranker.score`` with codes (numpy) and without (CatBoost): identical float32 scores, prior included."""
    model = _model()
    ranker = Ranker(model, NAMES)
    numeric, categorical = _unseen_rows()
    codes = ranker.category_hashes(categorical.ravel().tolist()).codes(categorical)
    assert np.array_equal(ranker.score(numeric, categorical, codes), ranker.score(numeric, categorical))
    assert np.array_equal(ranker.leaves(numeric, categorical, codes), ranker.leaves(numeric, categorical))


def test_a_model_the_arrays_cannot_read_is_scored_by_catboost():
    """Depth-wise trees are not symmetric: the ranker says so once and scores every row with CatBoost."""
    model = _model(grow_policy="Depthwise", depth=3)
    with pytest.raises(Unsupported):
        SymmetricTrees.of(model, NAMES)
    ranker = Ranker(model, NAMES)
    assert ranker.trees is None
    numeric, categorical = _unseen_rows()
    codes = ranker.category_hashes(categorical.ravel().tolist()).codes(categorical)
    assert codes is None  # no hashes for a model whose rows never go to the arrays
    expected = model.predict(Ranker.data(NAMES, numeric, categorical), prediction_type="RawFormulaVal")
    assert np.array_equal(ranker.score(numeric, categorical, codes), expected.astype(np.float32))


def test_categories_with_quotes_braces_escapes_and_other_scripts_are_hashed_as_catboost_hashes_them():
    """CatBoost's export writes each value as a C string literal of its UTF-8 bytes: every one is read back."""
    names = FeatureNames(("x",), ("c",))
    values = ['a"b', "a}b", "a\\b", "line\nbreak", "cr\rx", "tab\there", "ünï©ødé", "日本", "'q'", "{", "", " "]
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(600, 1)).astype(np.float32)
    categorical = rng.choice(values, 600).astype(object)[:, None]
    target = numeric[:, 0] + np.array([values.index(v) % 3 for v in categorical[:, 0]])
    model = CatBoost({"iterations": 30, "depth": 4, "verbose": False, "random_seed": 0, "allow_writing_files": False})
    model.fit(Pool(Ranker.data(names, numeric, categorical), label=target))
    hashes = CategoryHashes.of(model, names, values)
    assert sorted(hashes.table) == sorted(values)
    codes = hashes.codes(categorical)
    assert codes is not None
    trees = SymmetricTrees.of(model, names)
    data = Ranker.data(names, numeric, categorical)
    assert np.array_equal(trees.raw(trees.leaves(numeric, codes)), model.predict(data, prediction_type="RawFormulaVal"))


def test_one_row_alone_sums_its_trees_in_catboosts_order():
    """One row's leaf values are one contiguous run, which numpy would sum pairwise: each row scored alone equals
    predict to the bit (300 trees: enough for pairwise and sequential sums to part in the last bit)."""
    model = _model(iterations=300)
    trees = SymmetricTrees.of(model, NAMES)
    numeric, categorical = _unseen_rows()
    hashes = CategoryHashes.of(model, NAMES, categorical.ravel().tolist())
    data = Ranker.data(NAMES, numeric, categorical)
    expected = model.predict(data, prediction_type="RawFormulaVal", thread_count=1)
    alone = [trees.raw(trees.leaves(numeric[i : i + 1], hashes.codes(categorical[i : i + 1])))[0] for i in range(200)]
    assert np.array_equal(np.array(alone), expected[:200])


def test_hashes_found_unusable_give_no_codes_even_without_categories():
    """After a failed check the arrays stop for every row, also where a ranker has no categorical column."""
    assert CategoryHashes({}).codes(np.empty((5, 0), dtype=object)) is not None
    assert CategoryHashes({}, usable=False).codes(np.empty((5, 0), dtype=object)) is None
    assert CategoryHashes({"a": 1}, usable=False).codes(np.array([["a"]], dtype=object)) is None


@pytest.mark.parametrize(
    "params",
    [{"loss_function": "MultiClass"}, {"loss_function": "MultiRMSE"}, {"grow_policy": "Lossguide"}],
)
def test_models_the_arrays_cannot_read_are_scored_by_catboost(params: dict[str, object]):
    """Several values per leaf, or trees that are not symmetric: refused when read, never a crash at load."""
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(300, 3)).astype(np.float32)
    names = FeatureNames(("x0", "x1", "x2"), ())
    label = (
        np.stack([numeric[:, 0], numeric[:, 1]], axis=1)
        if params.get("loss_function") == "MultiRMSE"
        else ((numeric[:, 0] > 0).astype(int) + (numeric[:, 1] > 0))
    )
    model = CatBoost({"iterations": 10, "depth": 3, "verbose": False, "allow_writing_files": False, **params})
    model.fit(Pool(numeric, label=label))
    with pytest.raises(Unsupported):
        SymmetricTrees.of(model, names)
    assert Ranker(model, names).trees is None


def test_a_model_with_text_features_is_scored_by_catboost():
    """CatBoost exports such a model to cbm only: refused when read."""
    rng = np.random.default_rng(0)
    texts = rng.choice(["good film", "bad film", "fine movie", "awful"], 300)
    frame = pd.DataFrame({"x0": rng.normal(size=300).astype(np.float32), "review": texts})
    label = (np.char.find(texts.astype(str), "good") >= 0).astype(int)
    model = CatBoost({"iterations": 10, "verbose": False, "allow_writing_files": False, "loss_function": "Logloss"})
    model.fit(Pool(frame, label=label, text_features=["review"]))
    with pytest.raises(Unsupported):
        SymmetricTrees.of(model, FeatureNames(("x0",), ()))
