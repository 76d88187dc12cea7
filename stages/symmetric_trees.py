"""A CatBoost ranker's symmetric trees as numpy arrays: a request's scores without CatBoost's per-call set-up.

CatBoost's ``predict`` builds a pool and sets up its evaluator on every call:
about 290 µs before the first tree on this machine kind (measured for one
row), more than the trees take over one request's 173 rows (510 µs in all).
Here the model is read once from CatBoost's own JSON export. Every split is a
row of comparisons; each tree's leaf index is an OR over its levels, eight
rows per 64-bit word; the leaf values are summed tree by tree in float64, in
CatBoost's order, so a score equals CatBoost's to the bit (the unit tests
compare leaves and scores on every row of a trained model).

Categorical values enter as CatBoost's own 32-bit hashes of their strings,
which only CatBoost computes: :class:`CategoryHashes` asks it once for every
value of a feature snapshot. A row with a value it does not know, a model
with a construct this does not read (non-symmetric trees, more than one value
per leaf, multi-class or target-mean CTRs, text features), or a batch larger
than :data:`FAST_ROWS` goes to CatBoost instead.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from catboost import CatBoost, CatBoostError, FeaturesData, Pool

from stages.feature_view import FeatureNames

# Rows up to which these arrays beat CatBoost's predict; CatBoost's own loop is cheaper per row past its set-up
# (benchmarks/tree_scoring.py prints both across batch sizes).
FAST_ROWS = 400
MAX_DEPTH = 8  # a tree's leaf index must fit a byte
_MAGIC_INT = 0x4906BA494954CB65  # CatBoost's CalcHash: hash(a, b) = MAGIC * (a + MAGIC * b) mod 2**64
_MAGIC = np.uint64(_MAGIC_INT)
_MASK = 2**64 - 1
_EMPTY_BUCKET = 2**64 - 1  # a CTR table's unused slot in the JSON export


class Unsupported(ValueError):
    """The model uses something these arrays do not evaluate: CatBoost's own ``predict`` scores it."""


class CategoryHashes:
    """CatBoost's hash of each known categorical value (a string), for :meth:`SymmetricTrees.leaves`."""

    def __init__(self, table: dict[str, int], usable: bool = True) -> None:
        self.table = table
        self.usable = usable  # False: the numpy trees disagreed with CatBoost over this snapshot; no codes given

    @classmethod
    def of(cls, model: CatBoost, names: FeatureNames, values: Iterable[str]) -> CategoryHashes:
        """The hashes of ``values``, computed by CatBoost: its Python export lists the hash of every categorical
        value of the pool it is given (one call, a few milliseconds for a thousand values)."""
        strings = sorted({v for v in values if isinstance(v, str)})
        if not strings or not names.categorical:
            return cls({})
        pool = Pool(
            FeaturesData(
                num_feature_data=np.zeros((len(strings), len(names.numeric)), dtype=np.float32),
                cat_feature_data=np.repeat(np.array(strings, dtype=object)[:, None], len(names.categorical), axis=1),
                num_feature_names=list(names.numeric),
                cat_feature_names=list(names.categorical),
            )
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.py"
            model.save_model(str(path), format="python", pool=pool)
            source = path.read_text(encoding="utf-8")
        return cls(_exported_hashes(source))

    def codes(self, categorical: np.ndarray, repeated: int | None = None) -> np.ndarray | None:
        """The hashes of a (rows, features) object matrix as int32; None when a value is not known.

        Column by column: a lone user's rows share the user's columns (one lookup each), and item columns repeat
        few values. ``repeated``: ``categorical`` is one row standing for that many alike rows.
        """
        if not self.usable:
            return None
        table = self.table
        rows, width = categorical.shape
        out = np.empty((rows, width), dtype=np.int32)
        one = np.empty(width, dtype=np.int32)
        alike = True
        try:
            for j, column in enumerate(categorical.T.tolist()):
                distinct = set(column)
                if len(distinct) == 1:
                    out[:, j] = one[j] = table[distinct.pop()]
                else:
                    out[:, j], alike = [table[v] for v in column], False
        except (KeyError, TypeError):  # a value this snapshot did not have, or not a string
            return None
        if not (alike and rows):
            return out
        # Every row alike: one row seen as many (stride 0, read-only), which SymmetricTrees reads as one.
        same = np.ndarray((rows if repeated is None else repeated, width), np.int32, buffer=one, strides=(0, 4))
        same.flags.writeable = False
        return same


# One entry of the export's table: a C string literal of the value's UTF-8 bytes, then its hash.
_ENTRY = re.compile(r'^    "((?:[^"\\]|\\.)*)": (-?\d+),$')


def _exported_hashes(source: str) -> dict[str, int]:
    """The ``cat_features_hashes`` table of CatBoost's Python export: one ``"value": hash,`` line per value, the
    value escaped as C does (``\\n``, ``\\"``, bytes past ASCII as ``\\xHH`` or octal), which a Python bytes
    literal reads alike. A line this cannot read leaves its value out: rows with it go to CatBoost."""
    lines = source.splitlines()
    if "cat_features_hashes = {" not in lines:
        return {}
    table = {}
    for line in itertools.takewhile(lambda text: text != "}", lines[lines.index("cat_features_hashes = {") + 1 :]):
        entry = _ENTRY.match(line)
        if entry is None:
            continue
        try:
            table[ast.literal_eval(f'b"{entry.group(1)}"').decode("utf-8")] = int(entry.group(2))
        except (SyntaxError, ValueError):  # not a literal Python reads alike, or not UTF-8 (a ValueError): left out
            continue
    return table


class SymmetricTrees:
    """The arrays that find each row's leaf in every tree and sum the leaf values (see the module's docstring).

    The splits the trees use are numbered once: float comparisons first, then
    one-hot equalities, then CTR comparisons, then one split that is always
    false (it pads trees shallower than the deepest). ``levels_by_depth[d, t]``
    is the split of tree ``t`` at depth ``d``.
    """

    def __init__(self, spec: dict[str, Any], names: FeatureNames) -> None:
        info = spec["features_info"]
        n_numeric = len(names.numeric)
        everything = names.all
        for feature in [*info.get("float_features", []), *info.get("categorical_features", [])]:
            if everything[feature["flat_feature_index"]] != feature["feature_id"]:
                raise Unsupported(f"the model's feature {feature['feature_id']} is not the ranker's column")
        if info.get("text_features") or info.get("embedding_features"):
            raise Unsupported("text or embedding features")
        category_column = {
            c["feature_index"]: c["flat_feature_index"] - n_numeric for c in info.get("categorical_features", [])
        }
        binary = _binary_features(info, category_column)
        trees = spec.get("oblivious_trees")
        if not trees:
            raise Unsupported("no symmetric trees")
        scale, bias = spec["scale_and_bias"]
        if len(bias) != 1 or any(len(t["leaf_values"]) != 1 << len(t["splits"]) for t in trees):
            raise Unsupported("a multi-dimensional model (one value per leaf is read)")
        depth = max(len(tree["splits"]) for tree in trees)
        if depth > MAX_DEPTH:
            raise Unsupported(f"trees of depth {depth}")
        splits = [[_checked(binary, split) for split in tree["splits"]] for tree in trees]
        kind_order = ("float", "onehot", "ctr")
        used = sorted({s for tree in splits for s in tree}, key=lambda s: (kind_order.index(binary[s][0]), s))
        row = {s: j for j, s in enumerate(used)}
        never = len(used)
        levels = np.array([[row[s] for s in tree] + [never] * (depth - len(tree)) for tree in splits], dtype=np.intp)
        self.levels_by_depth = np.ascontiguousarray(levels.T)  # (depth, trees): the split of each tree at a depth
        self.n_trees, self.n_splits = len(trees), len(used)
        kinds = [binary[s] for s in used]
        floats = [k for k in kinds if k[0] == "float"]
        self.float_columns = np.array([k[1] for k in floats], dtype=np.intp)
        self.float_borders = np.array([k[2] for k in floats], dtype=np.float32)[:, None]
        self.nan_is_true = np.array([k[3] == "AsTrue" for k in floats])
        onehots = [k for k in kinds if k[0] == "onehot"]
        self.onehot_columns = np.array([k[1] for k in onehots], dtype=np.intp)
        self.onehot_values = np.array([k[2] for k in onehots], dtype=np.int32)[:, None]
        ctr_splits = [k for k in kinds if k[0] == "ctr"]
        self.ctr_of_split = np.array([k[1] for k in ctr_splits], dtype=np.intp)
        self.ctr_borders = np.array([k[2] for k in ctr_splits], dtype=np.float32)[:, None]
        nan_is_true = {
            f["flat_feature_index"]: f["nan_value_treatment"] == "AsTrue" for f in info.get("float_features", [])
        }
        float_column = {f["feature_index"]: f["flat_feature_index"] for f in info.get("float_features", [])}
        self.tables, self.ctr_values = _ctr_tables(
            info.get("ctrs", []), spec.get("ctr_data", {}), category_column, float_column, nan_is_true
        )
        values = np.zeros((self.n_trees, 1 << depth))
        for t, tree in enumerate(trees):
            values[t, : len(tree["leaf_values"])] = tree["leaf_values"]
        self.values = values.ravel()
        # Leaf values are read at tree * 2**depth + leaf: 16-bit indices when they fit (half the cost of 64-bit).
        index = np.uint16 if self.n_trees << depth <= 1 << 16 else np.intp
        self.offsets = (np.arange(self.n_trees, dtype=index) * (1 << depth))[:, None]
        self.shifts = np.arange(depth, dtype=np.uint64)[:, None, None]
        self.scale, self.bias = float(scale), float(bias[0])

    @classmethod
    def of(cls, model: CatBoost, names: FeatureNames) -> SymmetricTrees:
        """The arrays of a trained model (read from its JSON export); :class:`Unsupported` when it cannot be."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.json"
            try:
                model.save_model(str(path), format="json")
            except CatBoostError as exc:  # text features, for one, export to cbm only
                raise Unsupported(f"no JSON export: {exc}") from exc
            spec = json.loads(path.read_text())
        return cls(spec, names)

    def leaves(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(trees, rows) uint8: each row's leaf in every tree, from its numeric values and categorical hashes."""
        rows = len(numeric)
        width = -(-rows // 8) * 8  # rows rounded up to whole 64-bit words
        outcomes = np.zeros((self.n_splits + 1, width), dtype=np.uint8)
        split = outcomes.view(bool)
        n_float, n_onehot = len(self.float_columns), len(self.onehot_columns)
        by_column = np.asfortranarray(numeric, dtype=np.float32).T
        x = by_column[self.float_columns]
        np.greater(x, self.float_borders, out=split[:n_float, :rows])
        if self.nan_is_true.any():
            split[:n_float, :rows] |= np.isnan(x) & self.nan_is_true[:, None]
        if n_onehot:
            np.equal(codes.T[self.onehot_columns], self.onehot_values, out=split[n_float : n_float + n_onehot, :rows])
        if len(self.ctr_of_split):
            values = self._ctr_values(by_column, codes)
            np.greater(values[self.ctr_of_split], self.ctr_borders, out=split[n_float + n_onehot : -1, :rows])
        words = outcomes.view(np.uint64)[self.levels_by_depth]  # (depth, trees, words): 8 rows' outcomes per word
        words <<= self.shifts  # a 0/1 byte moved to bit d stays in its byte (d < 8)
        leaves = np.bitwise_or.reduce(words, axis=0)
        return leaves.view(np.uint8)[:, :rows]

    def raw(self, leaves: np.ndarray) -> np.ndarray:
        """Each row's raw score (float64) from its (trees, rows) leaves: CatBoost's ``RawFormulaVal``."""
        values = np.take(self.values, np.add(leaves, self.offsets, dtype=self.offsets.dtype))  # (trees, rows)
        # Tree after tree, as CatBoost adds them: numpy sums axis 0 of a (trees, rows) block so from two rows up;
        # one row is one contiguous run, which it would sum pairwise (the last bit can differ).
        total = values.sum(axis=0) if values.shape[1] > 1 else np.cumsum(values, axis=0)[-1]
        return total * self.scale + self.bias if self.scale != 1.0 or self.bias else total

    def _ctr_values(self, by_column: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(ctrs, rows) float32: each CTR's value for each row ((ctrs, 1) when every row has the same).

        A table keyed by categories alone is looked up once, in plain Python, when every row has the same
        categories (a lone user's rows, when the categories are the user's): a numpy call costs more than that.
        """
        rows = len(codes)
        same = rows == 1 or codes.strides[0] == 0 or bool((codes == codes[0]).all())
        first = codes[0].tolist()
        # One column for every row when each table's key is the same for all of them.
        columns = 1 if same and not any(table.borders for table in self.tables) else rows
        out = np.empty((len(self.ctr_values), columns), dtype=np.float32)
        for table in self.tables:
            slot = table.slot_of(first) if same and not table.borders else table.slots_of(by_column, codes)
            for ctr in table.ctrs:
                out[ctr] = self.ctr_values[ctr][slot]
        return out


@dataclass
class _CtrTable:
    """One CTR table: what its key hashes (categories, numeric borders crossed, categories equal to a value, in
    CatBoost's order), its keys, and the CTRs that read it."""

    categories: tuple[int, ...]  # categorical columns whose hashes enter the key
    borders: tuple[tuple[int, np.float32, bool], ...]  # numeric column, border, whether NaN is above it
    exact: tuple[tuple[int, int], ...]  # categorical column, hash: 1 when a row's value is that one
    keys: np.ndarray  # sorted uint64
    ctrs: list[int] = field(default_factory=list)

    def slot_of(self, codes: list[int]) -> int:
        """The slot of one row keyed by categories alone (-1: a key training never saw)."""
        hashed = 0
        for column in self.categories:
            hashed = (_MAGIC_INT * (hashed + _MAGIC_INT * (codes[column] & _MASK))) & _MASK
        for column, value in self.exact:
            hashed = (_MAGIC_INT * (hashed + _MAGIC_INT * int(codes[column] == value))) & _MASK
        slot = int(self.keys.searchsorted(np.uint64(hashed)))  # not a dict: a table can hold a key per user
        return slot if slot < len(self.keys) and int(self.keys[slot]) == hashed else -1

    def slots_of(self, by_column: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Each row's slot in the table (-1: a key training never saw)."""
        hashed = np.zeros(len(codes), dtype=np.uint64)
        parts = [codes[:, column].astype(np.int64).astype(np.uint64) for column in self.categories]  # sign-extended
        for column, border, nan_is_true in self.borders:
            x = by_column[column]
            parts.append(((x > border) | (np.isnan(x) & nan_is_true)).astype(np.uint64))
        parts += [(codes[:, column] == value).astype(np.uint64) for column, value in self.exact]
        for part in parts:
            hashed = _MAGIC * (hashed + _MAGIC * part)
        if not len(self.keys):
            return np.full(len(codes), -1)
        slot = np.minimum(np.searchsorted(self.keys, hashed), len(self.keys) - 1)
        slot[self.keys[slot] != hashed] = -1  # each CTR's value for "no counts" is stored last
        return slot


def _binary_features(info: dict[str, Any], category_column: dict[int, int]) -> list[tuple[Any, ...]]:
    """The model's binary features in CatBoost's numbering (a split's ``split_index``): each float feature's borders,
    each one-hot feature's values, each CTR's borders."""
    binary: list[tuple[Any, ...]] = []
    for feature in sorted(info.get("float_features", []), key=lambda f: f["feature_index"]):
        for border in feature.get("borders") or []:
            binary.append(("float", feature["flat_feature_index"], np.float32(border), feature["nan_value_treatment"]))
    for feature in sorted(info.get("categorical_features", []), key=lambda f: f["feature_index"]):
        for value in feature.get("values") or []:
            binary.append(("onehot", category_column[feature["feature_index"]], int(value)))
    for k, ctr in enumerate(info.get("ctrs", [])):
        for border in ctr["borders"]:
            binary.append(("ctr", k, np.float32(border)))
    return binary


def _checked(binary: list[tuple[Any, ...]], split: dict[str, Any]) -> int:
    """A split's binary feature, checked against what the split itself says (a numbering this module got wrong
    would fail here, not score silently wrong)."""
    index = split["split_index"]
    kind = {"FloatFeature": "float", "OneHotFeature": "onehot", "OnlineCtr": "ctr"}.get(split["split_type"])
    if kind is None or index >= len(binary) or binary[index][0] != kind:
        raise Unsupported(f"split {split}")
    expected = split.get("value") if kind == "onehot" else np.float32(split["border"])
    if binary[index][2] != expected:
        raise Unsupported(f"split {split} does not match binary feature {binary[index]}")
    return int(index)


def _ctr_tables(
    ctrs: list[dict[str, Any]],
    data: dict[str, Any],
    category_column: dict[int, int],
    float_column: dict[int, int],
    nan_is_true: dict[int, bool],
) -> tuple[list[_CtrTable], list[np.ndarray]]:
    """The tables, and each CTR's value per key of its table, as CatBoost's ``TStaticCtrProvider`` computes it
    (float32; the value for a key training never saw last)."""
    tables: dict[str, _CtrTable] = {}
    values: list[np.ndarray] = []
    f32 = np.float32
    for ctr in ctrs:
        identifier = ctr["identifier"]
        table = data[identifier]
        stride = int(table["hash_stride"])
        flat = table["hash_map"]
        keys = np.array([int(k) for k in flat[0::stride]], dtype=np.uint64)
        counts = np.array([flat[j::stride] for j in range(1, stride)], dtype=np.float64).reshape(stride - 1, -1)
        kept = keys != np.uint64(_EMPTY_BUCKET)
        order = np.argsort(keys[kept], kind="stable")
        keys, counts = keys[kept][order], counts[:, kept][:, order]
        if identifier not in tables:
            tables[identifier] = _projection(ctr["elements"], keys, category_column, float_column, nan_is_true)
        tables[identifier].ctrs.append(len(values))
        kind = ctr["ctr_type"]
        if kind == "Borders" and stride == 3:
            good, total = counts[1].astype(f32), (counts[0] + counts[1]).astype(f32)
            empty_good, empty_total = f32(0), f32(0)
        elif kind in ("Counter", "FeatureFreq") and stride == 2:
            denominator = f32(table["counter_denominator"])
            good, total = counts[0].astype(f32), np.full(len(keys), denominator, dtype=f32)
            empty_good, empty_total = f32(0), denominator
        else:
            raise Unsupported(f"a {kind} CTR with {stride - 1} counts per key")
        prior_num, prior_den = f32(ctr["prior_numerator"]), f32(ctr["prior_denomerator"])
        shift, scale = f32(ctr["shift"]), f32(ctr["scale"])
        value = ((good + prior_num) / (total + prior_den) + shift) * scale
        empty = ((empty_good + prior_num) / (empty_total + prior_den) + shift) * scale
        values.append(np.append(value, empty).astype(f32))
    return list(tables.values()), values


def _projection(
    elements: list[dict[str, Any]],
    keys: np.ndarray,
    category_column: dict[int, int],
    float_column: dict[int, int],
    nan_is_true: dict[int, bool],
) -> _CtrTable:
    """A table's key parts from the JSON elements of its projection."""
    categories, borders, exact = [], [], []
    for element in elements:
        kind = element["combination_element"]
        if kind == "cat_feature_value":
            categories.append(category_column[element["cat_feature_index"]])
        elif kind == "float_feature":
            column = float_column[element["float_feature_index"]]
            borders.append((column, np.float32(element["border"]), nan_is_true[column]))
        elif kind == "cat_feature_exact_value":
            exact.append((category_column[element["cat_feature_index"]], int(element["value"])))
        else:
            raise Unsupported(f"a CTR over {kind}")
    return _CtrTable(tuple(categories), tuple(borders), tuple(exact), keys)
