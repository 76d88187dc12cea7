"""Explanations: the history items an item resembles, and feature contributions in words."""

from __future__ import annotations

import numpy as np

from stages.explain import because, phrase


def test_because_picks_the_closest_history_items():
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    history = np.array([1, 2, 3])
    # Item 0: cosine 0.8 with 1, 0 with 2 (not positive: left out), -1 with 3.
    assert [b.tolist() for b in because(vectors, history, np.array([0, 2]))] == [[1], [2, 1]]
    assert because(vectors, np.empty(0, np.int64), np.array([0]))[0].tolist() == []


def test_phrases():
    favourite = {"genres": "Comedy"}.get
    assert phrase("pop_7d", favourite) == "popular this week"
    assert phrase("aff_genres_max", favourite) == "you watch a lot of Comedy"
    assert phrase("aff_lang", favourite) == "matches the lang you watch"
    assert phrase("recent_sim_max", favourite) == "similar to what you watched last"
    assert phrase("genres=Drama", favourite) == "it is Drama"
