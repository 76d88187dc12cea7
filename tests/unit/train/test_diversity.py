"""The diversity evaluation's pieces on data small enough to count by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from train.diversity import genre_diversity, markdown, relevant_after
from train.ranker_training import DAY


def test_relevant_after_is_the_new_items_in_the_horizon():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "x", "y", "z", "w", "x"],
            "timestamp": [0, 10 * DAY, 11 * DAY, 12 * DAY, 40 * DAY, 1 * DAY],
        }
    )
    # a took x before the cut (day 5): only y is new; b's w falls after the 14-day horizon; c has nothing after.
    assert relevant_after(frame, 5 * DAY, 14) == {"a": {"y"}, "b": {"z"}}


def test_genre_diversity():
    genres = {"1": frozenset({"Comedy"}), "2": frozenset({"Comedy", "Drama"}), "3": frozenset({"Horror"})}
    # Pairs: (1,2) Jaccard 1/2, (1,3) 0, (2,3) 0: mean 1/6.
    assert genre_diversity(["1", "2", "3"], genres) == pytest.approx(1 - 1 / 6)
    assert genre_diversity(["1"], genres) != genre_diversity(["1"], genres)  # NaN for a single item


def test_markdown():
    results = {"mean": {"0.0": {"ndcg@10": 0.2, "ild": 0.7, "genre_ild": 0.8}}}
    assert markdown(results).splitlines()[-1] == "| 0.0 | 0.2000 | 0.7000 | 0.8000 |"
