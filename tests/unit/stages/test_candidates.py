"""The candidate stage on a checkerboard with a known answer: ALS alone, then every source merged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stages import candidates
from stages.candidates import CandidateModel, CandidateParams, Recent, _merge_ranked, popularity_share


def checkerboard(n_users: int = 40, n_items: int = 20) -> pd.DataFrame:
    """Even users took even items, odd users odd items; one item of each is left out per user."""
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if i % 2 == u % 2 and i != (u % n_items):
                rows.append((f"u{u}", f"i{i}", i, 1.0))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "weight"])


ALS_ONLY = {"n_popular": 0, "n_cooc": 0}


def test_candidates_stay_in_the_users_block():
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=10, seed=1, **ALS_ONLY))
    users = np.array([model.user_index["u0"], model.user_index["u3"]])
    batch = model.top_n(users, n=1)
    assert model.item_ids[batch.items[0]].tolist() == ["i0"]  # the one even item u0 has not seen
    assert model.item_ids[batch.items[1]].tolist() == ["i3"]


def test_exclusions_and_seen_filter():
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=10, seed=1, **ALS_ONLY))
    user = np.array([model.user_index["u0"]])
    unfiltered = model.top_n(user, n=20, exclude_seen=False)
    assert len(unfiltered.items[0]) == 20
    filtered = model.top_n(user, n=20, exclude=[np.array([model.item_index["i0"]])])
    # 9 seen even items and i0 excluded leave the 10 odd items
    assert sorted(model.item_ids[filtered.items[0]]) == sorted(f"i{i}" for i in range(1, 20, 2))


def test_save_load_round_trip(tmp_path):
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    loaded = CandidateModel.load(tmp_path, model.params)
    np.testing.assert_array_equal(loaded.als.item_factors, model.als.item_factors)
    np.testing.assert_array_equal(loaded.user_ids, model.user_ids)
    np.testing.assert_array_equal(loaded.popular, model.popular)
    np.testing.assert_array_equal(loaded.cold_share, model.cold_share)
    np.testing.assert_array_equal(loaded.latest, model.latest)
    assert (loaded.seen != model.seen).nnz == 0
    np.testing.assert_array_equal(loaded.cooc.items, model.cooc.items)
    np.testing.assert_array_equal(loaded.cooc.weights, model.cooc.weights)


def memory_mapped(array: np.ndarray) -> bool:
    """Whether an array's memory is a file's mapping (shared by every process that maps the file)."""
    base: np.ndarray | None = array
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return False


def test_the_largest_arrays_load_memory_mapped_and_answer_the_same(tmp_path):
    # Mapped, a pod's workers share one copy of them in the page cache instead of one each.
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    loaded = CandidateModel.load(tmp_path, model.params)
    mapped = (loaded.seen.data, loaded.seen.indices, loaded.seen.indptr, loaded.latest)
    mapped += (loaded.als.user_factors, loaded.als.item_factors, loaded.cooc.items, loaded.cooc.weights)
    assert all(memory_mapped(a) for a in mapped)
    users = np.arange(len(model.user_ids))
    for mine, theirs in zip(model.top_n(users, 10).items, loaded.top_n(users, 10).items, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    recent = [Recent(np.array([0, 5]), np.array([1.0, 2.0], np.float32))] + [None] * (len(users) - 1)
    np.testing.assert_array_equal(model.user_vectors(users, recent), loaded.user_vectors(users, recent))
    for item in range(len(model.item_ids)):
        np.testing.assert_array_equal(model.similar_items(item, 3)[0], loaded.similar_items(item, 3)[0])


def test_a_model_saved_before_the_mapped_files_still_loads(tmp_path):
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    for part in ("data", "indices", "indptr"):
        (tmp_path / f"seen_{part}.npy").unlink()
    sp.save_npz(tmp_path / "seen.npz", model.seen)  # what save() wrote before
    for name in ("user_factors", "item_factors"):
        (tmp_path / f"als_{name}.npy").unlink()
    model.als.save(str(tmp_path / "als.npz"))  # implicit's file, factors inside
    for part in ("items", "weights"):
        (tmp_path / f"cooc_{part}.npy").unlink()
    np.savez(tmp_path / "cooc.npz", items=model.cooc.items, weights=model.cooc.weights)
    loaded = CandidateModel.load(tmp_path, model.params)
    assert (loaded.seen != model.seen).nnz == 0
    np.testing.assert_array_equal(loaded.als.user_factors, model.als.user_factors)
    np.testing.assert_array_equal(loaded.cooc.weights, model.cooc.weights)


def test_same_seed_same_factors():
    a = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    b = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    np.testing.assert_array_equal(a.als.user_factors, b.als.user_factors)


def test_similar_items_are_from_the_same_block():
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=10, seed=1))
    items, _ = model.similar_items(model.item_index["i2"], n=3)
    assert all(int(i[1:]) % 2 == 0 and i != "i2" for i in model.item_ids[items])


def test_sources_are_merged_once_each_with_their_ranks():
    # i1 is the most taken item in the last 30 days; u0 took i2 then i4 together with most even users.
    data = checkerboard()
    data.loc[data["item_id"] == "i1", "timestamp"] = 10_000_000
    model = CandidateModel.fit(data, CandidateParams(factors=4, iterations=10, seed=1, n_popular=2, n_cooc=3))
    batch = model.top_n(np.array([model.user_index["u0"]]), n=1)
    items = model.item_ids[batch.items[0]].tolist()
    assert items[0] == "i0"  # ALS first
    assert len(items) == len(set(items))  # each item once
    ranks = {source: batch.source_ranks[source][0] for source in ("als", "popular", "cooc")}
    assert ranks["als"][0] == 1 and np.isnan(ranks["als"][1:]).all()
    assert items[int(np.nanargmin(ranks["popular"]))] == "i1"  # the recent favourite, unseen by u0
    assert (~np.isnan(ranks["popular"])).sum() == 1  # only i1 was taken in the window: no zero-count padding
    assert (~np.isnan(ranks["cooc"])).sum() <= 3
    seen = set(model.item_ids[model.seen[model.user_index["u0"]].indices])
    assert not seen & set(items)  # no source proposes what the user has
    # The scores are the dot products summed in float64 (in float32 they depended on the batch: below).
    user = model.als.user_factors[model.user_index["u0"]].astype(np.float64)
    np.testing.assert_allclose(
        batch.scores[0], user @ model.als.item_factors[batch.items[0]].T.astype(np.float64), rtol=1e-6
    )


def test_a_users_scores_do_not_depend_on_who_is_scored_alongside():
    """A lone request and the same user in a batch score each candidate the same, bit for bit: the ranker's prior
    reads the scores linearly, and served answers must not move with the traffic around them."""
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=8, iterations=10, seed=1))
    users = np.arange(len(model.user_ids))
    together = model.top_n(users, n=5)
    for user in users:
        alone = model.top_n(np.array([user]), n=5)
        in_batch = dict(zip(together.items[user].tolist(), together.scores[user].tolist(), strict=True))
        assert in_batch == dict(zip(alone.items[0].tolist(), alone.scores[0].tolist(), strict=True))


def test_co_consumption_proposes_what_was_taken_with_the_latest_items():
    # Everyone who took a then took b; u9 just took a.
    rows = [(f"u{n}", item, t) for n in range(8) for t, item in enumerate(["a", "b"])] + [
        ("u9", "a", 5),
        ("u9", "z", 1),
    ]
    data = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(weight=1.0)
    model = CandidateModel.fit(data, CandidateParams(factors=2, iterations=3, seed=1, n_popular=0, n_cooc=1))
    batch = model.top_n(np.array([model.user_index["u9"]]), n=0)
    assert model.item_ids[batch.items[0]].tolist() == ["b"]
    assert batch.source_ranks["cooc"][0].tolist() == [1.0] and batch.cooc_scores[0][0] > 0


def test_co_consumption_in_blocks_is_the_cosine_of_the_whole_matrix(monkeypatch):
    """Items' rows a block at a time (memory at 20M interactions): each item's neighbours and weights are those
    of the cosine over the whole user-by-item matrix, ties by item index, whatever the block size."""
    rng = np.random.default_rng(3)
    n_users, n_items, width, neighbours = 60, 11, 4, 5
    latest = np.full((n_users, width), -1, dtype=np.int64)
    for user in range(n_users):
        taken = rng.choice(n_items, size=int(rng.integers(0, width + 1)), replace=False)
        latest[user, : len(taken)] = taken
    dense = np.zeros((n_users, n_items))
    for user, item in zip(*np.nonzero(latest >= 0), strict=True):
        dense[user, latest[user, item]] = 1.0
    together = dense.T @ dense
    np.fill_diagonal(together, 0)
    norm = 1 / np.sqrt(np.maximum(dense.sum(axis=0), 1))
    cosine = norm[:, None] * together * norm[None, :]
    whole = candidates._co_consumption(latest, n_items, neighbours)
    for item in range(n_items):
        expected = [j for j in np.lexsort((np.arange(n_items), -cosine[item])) if cosine[item, j] > 0][:neighbours]
        found = whole.items[item]
        assert found[: len(expected)].tolist() == expected and (found[len(expected) :] == -1).all()
        np.testing.assert_allclose(whole.weights[item][: len(expected)], cosine[item, expected], rtol=1e-6)
    for block in (1, 3, 4):
        monkeypatch.setattr(candidates, "COOC_BLOCK", block)
        blocked = candidates._co_consumption(latest, n_items, neighbours)
        assert np.array_equal(blocked.items, whole.items) and np.array_equal(blocked.weights, whole.weights)


DAY = 86400


def test_user_damping_stops_one_heavy_user_deciding_popularity():
    # In the last day u0 took items a-d, u1 and u2 took e; f was taken before that day.
    rows = [("u0", item, 2 * DAY) for item in "abcd"] + [("u1", "e", 2 * DAY), ("u2", "e", 2 * DAY), ("u3", "f", 0)]
    data = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = np.array(list("abcdef"), dtype=object)
    last_day = {"until": 2 * DAY + 1, "days": 1}
    np.testing.assert_allclose(popularity_share(data, items, **last_day), [1 / 6] * 4 + [2 / 6, 0], rtol=1e-6)
    # At 0.5 each of u0's four takes counts 1/2: 4 x 0.5 against 2 for e.
    damped = popularity_share(data, items, **last_day, user_damping=0.5)
    np.testing.assert_allclose(damped, [0.125] * 4 + [0.5, 0], rtol=1e-6)
    # At 1 every user weighs the same: u0's four takes together count as much as one of e's.
    np.testing.assert_allclose(
        popularity_share(data, items, **last_day, user_damping=1.0), [1 / 12] * 4 + [2 / 3, 0], rtol=1e-6
    )


def test_the_popular_source_ranks_by_damped_shares():
    # Two users who took 30 films each both took "cult"; one user took only "solo".
    rows = [(u, f"{u}-{n}", 100) for u in ("heavy1", "heavy2") for n in range(29)]
    rows += [("heavy1", "cult", 100), ("heavy2", "cult", 100), ("light", "solo", 100)]
    data = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(weight=1.0)
    params = CandidateParams(factors=2, iterations=2, seed=1, n_cooc=0)
    plain = CandidateModel.fit(data, replace(params, popular_user_damping=0.0))
    assert plain.item_ids[plain.popular[0]] == "cult"  # 2 takes; "solo" ties the 58 other single takes
    damped = CandidateModel.fit(data, params)  # "cult" 2 / sqrt(30), "solo" 1, the rest 1 / sqrt(30)
    assert params.popular_user_damping == 0.5
    assert damped.item_ids[damped.popular[:2]].tolist() == ["solo", "cult"]


def test_saving_over_a_mapped_model_leaves_the_loaded_one_as_it_was(tmp_path):
    # A process keeps reading the files it mapped; np.save over them used to truncate them under the map.
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    loaded = CandidateModel.load(tmp_path, model.params)
    factors, neighbours = np.array(loaded.als.item_factors), np.array(loaded.cooc.weights)
    other = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=4))
    other.save(tmp_path)
    np.testing.assert_array_equal(loaded.als.item_factors, factors)
    np.testing.assert_array_equal(loaded.cooc.weights, neighbours)
    np.testing.assert_array_equal(CandidateModel.load(tmp_path, model.params).als.item_factors, other.als.item_factors)
    assert not list(tmp_path.glob(".*partial"))


def test_a_model_without_its_factors_is_refused_at_load(tmp_path):
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3))
    model.save(tmp_path)
    (tmp_path / "als_user_factors.npy").unlink()
    with pytest.raises(FileNotFoundError, match="ALS factors missing"):
        CandidateModel.load(tmp_path, model.params)


def test_merged_candidates_keep_the_sources_order_and_each_sources_rank():
    """ALS first, then each source's new items in its order; a rank per source, NaN where it did not propose, the
    first rank for an item proposed twice."""
    merged, (als, popular, cooc) = _merge_ranked([np.array([5, 3, 9]), np.array([3, 7, 3, 5]), np.array([], int)], 10)
    assert merged.tolist() == [5, 3, 9, 7]
    np.testing.assert_array_equal(als, [1, 2, 3, np.nan])
    np.testing.assert_array_equal(popular, [4, 1, np.nan, 2])
    np.testing.assert_array_equal(cooc, [np.nan] * 4)


@pytest.mark.parametrize("block_rows", [1, 5, 64, 1 << 21])
def test_latest_items_in_blocks_are_each_users_newest_distinct_items(monkeypatch, block_rows):
    """Whole users a block of rows at a time (memory at 100M interactions): each user's ``width`` newest
    distinct items, ties in time by item code, whatever the block size (a user longer than a block included)."""
    monkeypatch.setattr(candidates, "LATEST_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(5)
    n_users, n_items, width, n = 12, 9, 4, 300
    users, items, times = rng.integers(0, n_users - 1, n), rng.integers(0, n_items, n), rng.integers(0, 20, n)
    order = np.lexsort((items, -times, users))
    latest = candidates._latest_items(users[order], items[order], n_users, width)
    for user in range(n_users):
        newest_first = sorted((-t, i) for u, i, t in zip(users, items, times, strict=True) if u == user)
        distinct = list(dict.fromkeys(i for _, i in newest_first))[:width]
        assert latest[user].tolist() == distinct + [-1] * (width - len(distinct))  # the last user has none
