"""The freshness backtest's item-to-item baseline on a matrix whose answer is known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from train.freshness import item_knn_lists


def _candidates(rows: list[list[int]], n_items: int) -> SimpleNamespace:
    """What item_knn_lists reads of a candidate model: who took what, and the item ids."""
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    seen = sp.csr_matrix((np.ones(len(users)), (users, np.concatenate(rows))), shape=(len(rows), n_items))
    ids = np.array([f"i{j}" for j in range(n_items)], dtype=object)
    return SimpleNamespace(seen=seen, item_ids=ids, item_index={i: j for j, i in enumerate(ids)}, n_items=n_items)


def test_items_taken_with_the_recent_ones_come_first_and_the_recent_ones_never():
    # i0 and i1 always together; i2 with i3; i4 with everything once.
    candidates = _candidates([[0, 1], [0, 1], [0, 1, 4], [2, 3], [2, 3, 4]], 5)
    lists = item_knn_lists(candidates, {"a": ["i0"], "b": ["i2", "unknown"], "c": ["nope"]}, k=2)
    assert lists["a"] == ["i1", "i4"]
    assert lists["b"] == ["i3", "i4"]
    assert len(lists["c"]) == 2  # no usable seed: a list all the same, never an error
