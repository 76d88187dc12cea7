"""The ALS candidate stage on a checkerboard with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.candidates import ALSParams, CandidateModel


def checkerboard(n_users: int = 40, n_items: int = 20) -> pd.DataFrame:
    """Even users took even items, odd users odd items; one item of each is left out per user."""
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if i % 2 == u % 2 and i != (u % n_items):
                rows.append((f"u{u}", f"i{i}", i, 1.0))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "weight"])


def test_candidates_stay_in_the_users_block():
    model = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=10, seed=1))
    users = np.array([model.user_index["u0"], model.user_index["u3"]])
    batch = model.top_n(users, n=1)
    assert model.item_ids[batch.items[0]].tolist() == ["i0"]  # the one even item u0 has not seen
    assert model.item_ids[batch.items[1]].tolist() == ["i3"]


def test_exclusions_and_seen_filter():
    model = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=10, seed=1))
    user = np.array([model.user_index["u0"]])
    unfiltered = model.top_n(user, n=20, exclude_seen=False)
    assert len(unfiltered.items[0]) == 20
    filtered = model.top_n(user, n=20, exclude=[np.array([model.item_index["i0"]])])
    # 9 seen even items and i0 excluded leave the 10 odd items
    assert sorted(model.item_ids[filtered.items[0]]) == sorted(f"i{i}" for i in range(1, 20, 2))


def test_save_load_round_trip(tmp_path):
    model = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    loaded = CandidateModel.load(tmp_path, model.params)
    np.testing.assert_array_equal(loaded.als.item_factors, model.als.item_factors)
    np.testing.assert_array_equal(loaded.user_ids, model.user_ids)
    np.testing.assert_array_equal(loaded.popular, model.popular)
    assert (loaded.seen != model.seen).nnz == 0


def test_same_seed_same_factors():
    a = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=5, seed=3))
    b = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=5, seed=3))
    np.testing.assert_array_equal(a.als.user_factors, b.als.user_factors)


def test_similar_items_are_from_the_same_block():
    model = CandidateModel.fit(checkerboard(), ALSParams(factors=4, iterations=10, seed=1))
    items, _ = model.similar_items(model.item_index["i2"], n=3)
    assert all(int(i[1:]) % 2 == 0 and i != "i2" for i in model.item_ids[items])
