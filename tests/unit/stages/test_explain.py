"""Explanations: the history items an item resembles, and feature contributions in words."""

from __future__ import annotations

import numpy as np
import pytest

from stages.explain import because, phrase


def test_because_picks_the_closest_history_items():
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    history = np.array([1, 2, 3])
    # Item 0: cosine 0.8 with 1, 0 with 2 (not positive: left out), -1 with 3.
    assert [b.tolist() for b in because(vectors, history, np.array([0, 2]))] == [[1], [2, 1]]
    assert because(vectors, np.empty(0, np.int64), np.array([0]))[0].tolist() == []


def sorted_because(unit_vectors: np.ndarray, history: np.ndarray, items: np.ndarray, n: int = 3) -> list[list[int]]:
    """The first implementation, a full stable sort of every row: the reference the fast one must equal."""
    sims = unit_vectors[items] @ unit_vectors[history].T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    best = np.take_along_axis(sims, top, axis=1)
    return [history[picked[close > 0]].tolist() for picked, close in zip(top, best, strict=True)]


@pytest.mark.parametrize("size", [1, 2, 3, 40, 700])
def test_because_equals_a_full_stable_sort(size):
    """Ties (repeated vectors), zero vectors, short and long histories: the same items in the same order."""
    rng = np.random.default_rng(size)
    vectors = rng.normal(size=(1000, 8)).astype(np.float32)
    vectors[::7] = vectors[3]  # many items alike: exact ties, broken by the lower history position
    vectors[::11] = 0  # zero rows: cosine 0, never named
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    history = np.sort(rng.choice(1000, size, replace=False))
    items = rng.choice(1000, 10, replace=False)
    assert [b.tolist() for b in because(vectors, history, items)] == sorted_because(vectors, history, items)


def test_phrases():
    favourite = {"genres": "Comedy"}.get
    assert phrase("pop_7d", favourite) == "popular this week"
    assert phrase("aff_genres_max", favourite) == "you watch a lot of Comedy"
    assert phrase("aff_lang", favourite) == "matches the lang you watch"
    assert phrase("recent_sim_max", favourite) == "similar to what you watched last"
    assert phrase("genres=Drama", favourite) == "it is Drama"
