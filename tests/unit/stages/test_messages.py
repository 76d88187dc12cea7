"""What an answer says, sentence by sentence: known answers for each case the pipeline passes in."""

from __future__ import annotations

import numpy as np

from stages.cold_start import first_k_not_in, popular_page
from stages.messages import (
    RecentUse,
    cold_start_message,
    cold_start_reasons,
    recent_note,
    rule_notes,
    segment_phrase,
)


def test_recent_items_are_counted_and_the_ignored_ones_named():
    assert recent_note(RecentUse(3, 0, unknown_user=False)) == "3 recent items used"
    assert recent_note(RecentUse(2, 1, unknown_user=True)) == (
        "unknown user: ranked from 2 recent items, 1 ignored (not in the model's catalogue)"
    )
    assert (
        recent_note(RecentUse(0, 2, unknown_user=True))
        == "0 recent items used, 2 ignored (not in the model's catalogue)"
    )


def test_a_full_plain_page_says_nothing_and_a_short_one_says_why():
    assert rule_notes(None, found=10, k=10, offset=0, ruled=False) == []
    assert rule_notes(None, found=0, k=10, offset=0, ruled=False) == [
        "nothing left to recommend: the user has already taken (or excluded) every item in the catalogue"
    ]
    allowed = np.array([True, False, True, False])
    assert rule_notes(allowed, found=1, k=5, offset=20, ruled=True) == [
        "filters allow 2 of 4 items",
        "only 1 items left to recommend from position 21: the rest are seen, excluded, filtered out or hidden",
    ]
    # Past the end of a known user's candidate pool: the pool is why, not what was seen (a probe's finding).
    assert rule_notes(None, found=20, k=100, offset=200, ruled=False, pool=220) == [
        "only 20 items left to recommend from position 201: the ranking ends with its 220 candidates "
        "(seen or excluded items are never candidates; RECSYS_N_CANDIDATES sets the pool)"
    ]


def test_segments_are_named_by_their_range():
    edges = [25.0, 35.0]
    assert segment_phrase("age=30", edges) == "popular among users with age 25–35"
    assert segment_phrase("age=20", edges) == "popular among users with age under 25"
    assert segment_phrase("age=40", edges) == "popular among users with age 35 and over"
    assert segment_phrase("gender=F", None) == "popular among users with gender F"
    assert cold_start_reasons(30, ["age=30"], {"age": edges}) == [
        "most popular in the last 30 days",
        "popular among users with age 25–35",
    ]


def test_the_cold_start_message_says_who_which_list_and_what_reordered_it():
    assert cold_start_message(False, None, [], False, []) == "unknown user: most popular in all time"
    assert cold_start_message(True, 30, ["age=30", "gender=F"], False, ["filters allow 2 of 4 items"]) == (
        "no interactions yet: most popular in the last 30 days, reordered by what users with age=30, gender=F "
        "take; filters allow 2 of 4 items"
    )
    assert cold_start_message(False, 7, [], True, []) == (
        "unknown user: most popular in the last 7 days (attributes not used: segments got no weight in the backtest)"
    )


def test_a_popular_page_keeps_to_the_rules_and_the_offset():
    scores = np.array([0.1, 0.5, 0.4, 0.3, 0.2])  # ranking: 1, 2, 3, 4, 0
    assert popular_page(scores, None, np.array([2]), 0, 3).tolist() == [1, 3, 4]
    allowed = np.array([True, True, False, True, True])
    assert popular_page(scores, allowed, np.array([], dtype=np.int64), 1, 2).tolist() == [3, 4]
    assert first_k_not_in(np.array([1, 2, 3, 4, 0]), 2, {1}).tolist() == [2, 3]
