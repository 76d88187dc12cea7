"""The feature view: rows for (user, candidate) pairs and the segment fallback, on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.families import Pairs
from features.families.base import one_object_per_value
from features.families.recent_similarity import RECENT_ITEMS, RecentSimilarity, _columns_of
from features.families.segments import bucket_label, bucket_labels
from features.schema import Dataset
from stages.feature_view import FeatureView


def test_view_rows_match_tables(tiny):
    tables = compute_features(tiny)
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    names = view.available()
    users = view.user_rows(["u1", "u1", "nobody"])
    pairs = Pairs(
        user_rows=users,
        items=np.array([1, 2, 0]),
        als_scores=np.array([0.9, 0.5, 0.1], np.float32),
        cooc_scores=np.array([0.0, 0.3, 0.0], np.float32),
        source_ranks={
            "als": np.array([1, 2, 1], np.float32),
            "popular": np.array([np.nan, 1, 2], np.float32),
            "cooc": np.array([np.nan, 1, np.nan], np.float32),
        },
    )
    numeric, categorical = view.rows(names, pairs)
    col = {n: numeric[:, i] for i, n in enumerate(names.numeric)}
    assert col["pop_all"].tolist() == pytest.approx([0.4, 0.2, 0.4])  # shares of the 5 interactions
    assert col["als_score"].tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert col["popular_rank"][1:].tolist() == [1, 2] and np.isnan(col["popular_rank"][0])
    assert col["cooc_score"].tolist() == pytest.approx([0.0, 0.3, 0.0])
    # u1 took a (day 0) and b (day 1); b is the candidate itself: its similarity is 1, 59 days back.
    assert col["days_since_similar"][0] == pytest.approx(59.0)
    assert col["aff_genres"][0] == pytest.approx((1.0 + 2 / 6) / 2)  # item b has two genres
    assert col["aff_genres_max"][1] == pytest.approx(2 / 6)
    assert col["genres=comedy"].tolist() == [1, 1, 0]
    assert col["diff_year"][1] == pytest.approx(2010 - (4 * 1990 + 2 * 2000) / 6, rel=1e-5)  # float32
    assert col["recent_sim_max"].tolist() == pytest.approx([1.0, 0.0, -1.0])  # unknown user: no history
    assert np.isnan(col["activity"][2]) and np.isnan(col["seg_job"][2])
    assert categorical[:, names.categorical.index("cat_job")].tolist() == ["x", "x", "<unknown>"]


def test_segment_fallback_uses_bucketed_numeric_attributes(tiny):
    view = FeatureView(compute_features(tiny), np.array(["a", "b", "c"], dtype=object))
    scores, used = view.segment_scores({"job": "y", "unknown_attribute": 1})
    assert used == ["job=y"]
    assert scores.tolist() == pytest.approx([1 / 9, 3 / 9, 5 / 9])
    assert view.segment_scores({"job": "never-seen"}) is None


def test_recent_similarity_per_pair_whatever_the_order_of_users(tiny):
    """Pairs of several users, interleaved: each pair's similarities are to its own user's latest items.

    The columns compute one product per run of a user's pairs; the reference is
    the definition, pair by pair.
    """
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    view = FeatureView(compute_features(tiny), np.array(["a", "b", "c"], dtype=object), vectors)
    users = view.user_rows(["u1", "u2", "u2", "u1", "nobody", "u1"])
    items = np.array([2, 0, 1, 1, 0, 0])
    pairs = Pairs(
        user_rows=users,
        items=items,
        als_scores=np.zeros(6, np.float32),
        cooc_scores=np.zeros(6, np.float32),
        source_ranks={s: np.ones(6, np.float32) for s in ("als", "popular", "cooc")},
    )
    names = view.available()
    numeric, _ = view.rows(names, pairs)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    latest = {"u1": [1, 0], "u2": [2, 1, 0], "nobody": []}  # newest first (tiny's timestamps)
    for row, (user, item) in enumerate(zip(["u1", "u2", "u2", "u1", "nobody", "u1"], items, strict=True)):
        sims = [float(unit[item] @ unit[other]) for other in latest[user]]
        got_max = numeric[row, names.numeric.index("recent_sim_max")]
        got_mean = numeric[row, names.numeric.index("recent_sim_mean")]
        assert got_max == pytest.approx(max(sims, default=-1.0), abs=1e-6)
        assert got_mean == pytest.approx(sum(sims) / max(len(sims), 1), abs=1e-6)


def test_recent_similarity_tells_fresh_users_apart(tiny):
    """Two visitors side by side (both snapshot row -1) and u1 with and without recent items: each its own items."""
    vectors = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    view = FeatureView(compute_features(tiny), np.array(["a", "b", "c"], dtype=object), vectors)
    u1 = int(view.user_rows(["u1"])[0])
    fresh = view.fresh_users(
        np.array([-1, -1, u1]),
        [np.array([0]), np.array([2]), np.array([2])],  # visitor 1 took a, visitor 2 c, u1 c just now
        [np.zeros(1, np.float32)] * 3,
        [np.ones(1, np.float32)] * 3,
        [{}, {}, {}],
    )
    owners = [(-1, 0), (-1, 0), (-1, 1), (-1, 1), (u1, 2), (u1, -1)]  # (snapshot row, fresh slot)
    items = np.array([1, 2, 1, 0, 0, 0])
    pairs = Pairs(
        user_rows=np.array([row for row, _ in owners]),
        items=items,
        als_scores=np.zeros(6, np.float32),
        cooc_scores=np.zeros(6, np.float32),
        source_ranks={s: np.ones(6, np.float32) for s in ("als", "popular", "cooc")},
        fresh=fresh,
        fresh_slots=np.array([slot for _, slot in owners]),
    )
    names = view.available()
    numeric, _ = view.rows(names, pairs)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    latest = [[0], [0], [2], [2], [2, 1, 0], [1, 0]]  # newest first: recent items, then u1's stored b and a
    for row, (item, mine) in enumerate(zip(items, latest, strict=True)):
        expected = max(float(unit[item] @ unit[other]) for other in mine)
        assert numeric[row, names.numeric.index("recent_sim_max")] == pytest.approx(expected, abs=1e-6), row


def test_a_built_view_keeps_arrays_not_the_per_user_lists_and_long_tables_it_was_built_from(tiny):
    """Every worker holds its view: the users' latest-item tuples and the long tables stay only until the
    columns are built (at 138k users the tuples alone are over 100 MB a worker)."""
    tables = compute_features(tiny)
    assert {"recent_items", "recent_days_ago"} <= set(tables.users.columns) and len(tables.affinity)
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    context = view.families[0].view
    assert not {"recent_items", "recent_days_ago"} & set(context.users.columns)
    assert context.tables.affinity.empty and context.tables.segments.empty
    assert "recent_items" in tables.users.columns  # the tables given are left as they were (training saves them)
    assert context.item_values("genres")[0] == ["comedy", "drama"]  # built before, kept
    with pytest.raises(RuntimeError, match="let its tables go"):
        context.item_values("year")  # an attribute no family asked for while building
    # What reads the families after the build (train/studies.py) still gets every column.
    assert [c.name for f in view.families for c in f.columns()] == list(view.columns)


def test_equal_values_of_a_users_column_are_one_object():
    values = np.array(["abc", "y", None, None, float("nan"), float("23"), float("23"), ("a",)], dtype=object)
    values[2] = "".join(["ab", "c"])
    assert values[0] == values[2] and values[0] is not values[2] and values[5] is not values[6]
    shared = one_object_per_value(values)
    assert shared.tolist()[:4] == ["abc", "y", "abc", None] and shared[0] is shared[2] and shared[5] is shared[6]
    assert shared[4] != shared[4] and shared[7] == ("a",)
    mixed = one_object_per_value(np.array([1.0, 1, True], dtype=object))  # equal, but str() tells them apart
    assert [type(v) for v in mixed] == [float, int, bool]


def test_latest_items_skip_what_the_catalogue_lacks_and_keep_the_first_ten_found(tiny):
    tables = compute_features(tiny)
    many = tuple(["gone", *"abcabcabcab", "c"])  # 13 items, one the catalogue lacks: the first 10 found are kept
    tables.users.loc["u1", "recent_items"] = many
    tables.users.loc["u1", "recent_days_ago"] = tuple(float(d) for d in range(len(many)))
    tables.users.loc["u2", "recent_items"], tables.users.loc["u2", "recent_days_ago"] = ("gone",), (1.0,)
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    latest, days_ago = next(f for f in view.families if isinstance(f, RecentSimilarity)).latest
    row1, row2 = view.user_row["u1"], view.user_row["u2"]
    assert latest[row1].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert days_ago[row1].tolist() == [float(d) for d in range(1, 11)]
    assert latest[row2].tolist() == [-1] * 10 and np.isnan(days_ago[row2]).all()
    assert latest[-1].tolist() == [-1] * 10  # the unknown-user row


def test_numeric_attributes_fall_in_quantile_buckets_missing_in_none():
    values = pd.Series([np.nan, 1.0, 2.0, 2.5, 3.0, None], index=list("uvwxyz"), dtype="Float64")
    labels = bucket_labels(values, [2.0, 3.0])
    assert labels.tolist() == [None, "q0", "q1", "q1", "q2", None] and labels.index.tolist() == list("uvwxyz")
    assert labels.tolist() == [bucket_label(v, [2.0, 3.0]) for v in [None, 1.0, 2.0, 2.5, 3.0, None]]


@pytest.mark.parametrize("n_latest", [0, 3, RECENT_ITEMS])
def test_recent_similarity_of_one_owner_equals_the_columns_copied_out_per_pair(n_latest: int):
    """A lone request reads its user's latest items as one row; a batch copies them out per pair: the same values,
    bit for bit (a mean over fewer valid items, no similar item, no latest item at all)."""
    rng = np.random.default_rng(n_latest)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[1] = vectors[0]  # item 1 is item 0: a cosine of 1, so some candidate has a similar latest item
    recent = np.full(RECENT_ITEMS, -1, dtype=np.int64)
    recent[:n_latest] = rng.choice(np.arange(1, 60), n_latest, replace=False)
    ages = np.where(recent >= 0, rng.uniform(0, 90, RECENT_ITEMS), np.nan).astype(np.float32)
    items = rng.choice(60, 40, replace=False)
    items[0] = 0
    one = _columns_of(vectors, recent, ages, items, np.empty(0, np.int64))
    each = _columns_of(vectors, np.tile(recent, (40, 1)), np.tile(ages, (40, 1)), items, np.empty(0, np.int64))
    for got, expected in zip(one, each, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert one[0].dtype == one[1].dtype == one[2].dtype == np.float32
    assert np.isnan(one[2]).all() == (n_latest == 0)


def test_attributes_that_no_interaction_has_build_a_view_of_empty_shares(tiny):
    """An item attribute only an untaken item has, a user attribute only a user without interactions has: no
    share to fill in. The view used to fail on them (an IndexError) next to attributes that had some."""
    items = tiny.items.assign(studio=[None, None, None])
    items.loc["d"] = ["D", ("drama",), 2020.0, "s1"]  # never taken
    users = tiny.users.assign(club=[None, None])
    users.loc["u3"] = ["z", 30.0, "gold"]  # no interactions
    tables = compute_features(Dataset(tiny.interactions, users, items))
    view = FeatureView(tables, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    names = view.available()
    assert "aff_genres" in names.numeric and "aff_studio" in names.numeric
    pairs = Pairs(
        user_rows=view.user_rows(["u1", "u1"]),
        items=np.array([0, 2]),
        als_scores=np.zeros(2, np.float32),
        cooc_scores=np.zeros(2, np.float32),
        source_ranks={source: np.ones(2, np.float32) for source in ("als", "popular", "cooc")},
    )
    numeric, _ = view.rows(names, pairs)
    col = {n: numeric[:, i] for i, n in enumerate(names.numeric)}
    assert col["aff_studio"].tolist() == [0.0, 0.0]
    assert col["aff_genres"].tolist() == pytest.approx([1.0, 2 / 6])  # u1: drama a, comedy c
