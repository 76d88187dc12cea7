"""Filters, hidden items, paging, diversity and explanations on data small enough to know every answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.schema import Dataset, validate_interactions
from stages.candidates import CandidateModel, CandidateParams
from stages.feature_view import FeatureView
from stages.pipeline import POPULAR, TWO_STAGE, Query, RecentEvent, TwoStageRecommender
from stages.rules import (
    AttributeFilter,
    Catalogue,
    RuleError,
    as_filters,
    hidden_items_file,
    intra_list_diversity,
    mmr,
    read_hidden,
)

ITEMS = [f"i{i}" for i in range(8)]
GENRES = [("Drama",), ("Comedy",), ("Drama", "Comedy"), ("Horror",), ("Comedy",), ("Drama",), ("Horror", "Comedy"), ()]
YEARS = [1980.0, 1985, 1990, 1995, 2000, 2005, 2010, np.nan]
LANGS = ["en", "fr", "en", "de", "en", "fr", "en", None]
TAKEN = {
    "u0": ["i0", "i1", "i3"],
    "u1": ["i0", "i1", "i2"],
    "u2": ["i0", "i4", "i5"],
    "u3": ["i2", "i3", "i6"],
    "u4": ["i1", "i5", "i6", "i7"],
    "u5": ["i0", "i2", "i4", "i6"],
}


def items_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"title": [f"Title {i}" for i in ITEMS], "genres": GENRES, "release_year": YEARS, "lang": LANGS},
        index=pd.Index(ITEMS, name="item_id"),
    )


@pytest.fixture(scope="module")
def parts() -> tuple[CandidateModel, FeatureView]:
    rows = [(u, i, t) for t, (u, i) in enumerate((u, i) for u, items in TAKEN.items() for i in items)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(weight=1.0)
    users = pd.DataFrame({"job": list("aaabbb")}, index=pd.Index(list(TAKEN), name="user_id"))
    data = Dataset(validate_interactions(frame), users, items_table())
    candidates = CandidateModel.fit(data.interactions, CandidateParams(factors=3, iterations=5, seed=1))
    view = FeatureView(compute_features(data), candidates.item_ids, candidates.als.item_factors, "v1")
    return candidates, view


@pytest.fixture()
def pipeline(parts) -> TwoStageRecommender:
    candidates, view = parts
    return TwoStageRecommender(candidates, None, view, n_candidates=8)


def ids(mask: np.ndarray) -> list[str]:
    return [ITEMS[i] for i in np.flatnonzero(mask)]


def test_catalogue_masks_are_exact():
    catalogue = Catalogue(items_table(), {"genres": "list", "release_year": "numeric", "lang": "categorical"})
    mask = lambda **rules: ids(catalogue.mask(as_filters({a: AttributeFilter(**r) for a, r in rules.items()})))  # noqa: E731
    assert mask(genres={"include": ("Comedy",)}) == ["i1", "i2", "i4", "i6"]
    assert mask(genres={"include": ("Drama", "Horror")}) == ["i0", "i2", "i3", "i5", "i6"]  # any of
    assert mask(genres={"exclude": ("Comedy",)}) == ["i0", "i3", "i5", "i7"]  # none of: no genres passes
    assert mask(genres={"include": ("Comedy",), "exclude": ("Horror",)}) == ["i1", "i2", "i4"]
    assert mask(release_year={"gte": 1990}) == ["i2", "i3", "i4", "i5", "i6"]  # a missing year never matches
    assert mask(release_year={"gt": 1990, "lt": 2005}) == ["i3", "i4"]
    assert mask(release_year={"lte": 1985}) == ["i0", "i1"]
    assert mask(lang={"include": ("fr", "de")}) == ["i1", "i3", "i5"]
    assert mask(lang={"exclude": ("en",)}) == ["i1", "i3", "i5", "i7"]
    assert mask(genres={"include": ("Comedy",)}, release_year={"gte": 2000}) == ["i4", "i6"]  # all of
    assert catalogue.mask(()) is None


@pytest.mark.parametrize(
    ("filters", "field", "words"),
    [
        ({"colour": AttributeFilter(include=("red",))}, "filters.colour", "unknown item attribute 'colour'"),
        ({"genres": AttributeFilter(include=("comedy",))}, "filters.genres.include", "unknown value 'comedy'"),
        ({"genres": AttributeFilter(exclude=("X",))}, "filters.genres.exclude", "known: Comedy, Drama, Horror"),
        ({"genres": AttributeFilter(gte=1.0)}, "filters.genres", "genres is list: filter it with include"),
        ({"release_year": AttributeFilter(include=("1990",))}, "filters.release_year", "numeric: filter it with gte"),
    ],
)
def test_filters_the_catalogue_cannot_apply_name_the_field(filters, field, words):
    catalogue = Catalogue(items_table(), {"genres": "list", "release_year": "numeric", "lang": "categorical"})
    with pytest.raises(RuleError) as error:
        catalogue.check(as_filters(filters))
    assert error.value.field == field and words in str(error.value)


def test_filters_apply_before_ranking_and_the_list_is_never_short_while_items_remain(pipeline):
    comedy = {"genres": AttributeFilter(include=("Comedy",))}
    [answer] = pipeline.recommend([Query("u0", k=2, filters=comedy)])
    # u0 took i0, i1, i3; the unseen comedies are i2, i4, i6: two of them, in ALS order.
    [plain] = pipeline.recommend([Query("u0", k=5)])
    assert answer.item_ids == [i for i in plain.item_ids if i in {"i2", "i4", "i6"}][:2]
    assert answer.strategy == TWO_STAGE and answer.message == "filters allow 4 of 8 items"
    [short] = pipeline.recommend([Query("u0", k=5, filters=comedy)])
    assert sorted(short.item_ids) == ["i2", "i4", "i6"]
    assert short.message == (
        "filters allow 4 of 8 items; "
        "only 3 items left to recommend: the rest are seen, excluded, filtered out or hidden"
    )


def test_a_filter_allowing_one_item_returns_it(pipeline):
    [answer] = pipeline.recommend([Query("u0", k=3, filters={"release_year": AttributeFilter(gte=2010)})])
    assert answer.item_ids == ["i6"]


def test_cold_start_takes_the_filters_offset_and_hidden_items(pipeline):
    [plain] = pipeline.recommend([Query("stranger", k=8)])
    assert plain.strategy == POPULAR
    drama = {"genres": AttributeFilter(include=("Drama",))}
    [answer] = pipeline.recommend([Query("stranger", k=8, filters=drama)])
    assert answer.item_ids == [i for i in plain.item_ids if i in {"i0", "i2", "i5"}]
    assert answer.message.endswith(
        "; filters allow 3 of 8 items; only 3 items left to recommend: "
        "the rest are seen, excluded, filtered out or hidden"
    )
    [page] = pipeline.recommend([Query("stranger", k=2, offset=2)])
    assert page.item_ids == plain.item_ids[2:4]
    hidden = pipeline.with_hidden(frozenset({plain.item_ids[0]}))
    [answer] = hidden.recommend([Query("stranger", k=3)])
    assert answer.item_ids == plain.item_ids[1:4]


def test_hidden_items_never_come_back_on_any_path(pipeline):
    [plain] = pipeline.recommend([Query("u0", k=5)])
    gone = frozenset(plain.item_ids[:2])
    hidden = pipeline.with_hidden(gone)
    [answer] = hidden.recommend([Query("u0", k=5)])
    assert answer.item_ids == plain.item_ids[2:]
    similar, _, _ = hidden.similar(0, 7)
    assert not gone & set(similar) and len(similar) == 5
    assert hidden.with_view(hidden.view).hidden == gone  # a feature refresh keeps the list


def test_filtered_count_counts_filtered_out_and_hidden_items_too(pipeline):
    """The metric counts every item kept out of an answer, each once (it counted only seen and excluded ones)."""
    comedy = {"genres": AttributeFilter(include=("Comedy",))}  # leaves out i0, i3, i5, i7
    assert pipeline.filtered_count(Query("u0")) == 3  # seen: i0, i1, i3
    assert pipeline.filtered_count(Query("u0", filters=comedy)) == 5  # i0, i1, i3 seen; i5, i7 filtered out
    assert pipeline.filtered_count(Query("u0", exclude_seen=False, filters=comedy)) == 4
    assert pipeline.filtered_count(Query("stranger", filters=comedy, exclude_items=["i4", "i0"])) == 5
    assert pipeline.filtered_count(Query("visitor", filters=comedy, recent_items=[RecentEvent("i6")])) == 5
    hidden = pipeline.with_hidden(frozenset({"i2", "i3"}))
    assert hidden.filtered_count(Query("u0", filters=comedy)) == 6  # i2 hidden; i3 already counted
    assert hidden.filtered_count(Query("stranger")) == 2


def test_similar_items_take_filters(pipeline):
    similar, scores, _ = pipeline.similar(0, 7, as_filters({"genres": AttributeFilter(include=("Comedy",))}))
    assert sorted(similar) == ["i1", "i2", "i4", "i6"] and scores == sorted(scores, reverse=True)
    plain, _, _ = pipeline.similar(0, 7)
    assert similar == [i for i in plain if i in {"i1", "i2", "i4", "i6"}]  # the same cosine order


def test_pages_are_slices_of_one_ranking(pipeline):
    [whole] = pipeline.recommend([Query("u0", k=6, exclude_seen=False)])
    pages = [pipeline.recommend([Query("u0", k=2, offset=o, exclude_seen=False)])[0].item_ids for o in (0, 2, 4)]
    assert pages[0] + pages[1] == whole.item_ids[:4] and pages[2] == whole.item_ids[4:6]
    [beyond] = pipeline.recommend([Query("u0", k=2, offset=8, exclude_seen=False)])
    assert beyond.item_ids == [] and "from position 9" in beyond.message


def test_mmr_exact_picks():
    # Items 0 and 1 are the same direction, 2 is orthogonal; relevance 1.0, 0.9, 0.5.
    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    order = np.array([10, 11, 12])
    relevance = np.array([1.0, 0.9, 0.5])
    assert mmr(order, relevance, vectors, 0.0, 3).tolist() == [10, 11, 12]
    # gain(1) = 0.5 * 0.8 - 0.5 * 1 = -0.1, gain(2) = 0.5 * 0 - 0 = 0: the orthogonal item comes second.
    assert mmr(order, relevance, vectors, 0.5, 3).tolist() == [10, 12, 11]
    # d = 0.1: gain(1) = 0.9 * 0.8 - 0.1 = 0.62 beats gain(2) = 0.
    assert mmr(order, relevance, vectors, 0.1, 2).tolist() == [10, 11]
    assert intra_list_diversity(np.array([0, 1]), vectors) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([0, 2]), vectors) == pytest.approx(1.0)


def test_diversity_zero_leaves_the_ranking_and_more_diversity_never_lowers_it(pipeline):
    [plain] = pipeline.recommend([Query("u0", k=4, exclude_seen=False)])
    [same] = pipeline.recommend([Query("u0", k=4, exclude_seen=False, diversity=0.0)])
    assert same.item_ids == plain.item_ids and same.scores == plain.scores
    [diverse] = pipeline.recommend([Query("u0", k=4, exclude_seen=False, diversity=1.0)])
    index = pipeline.candidates.item_index
    ild = lambda a: intra_list_diversity(np.array([index[i] for i in a.item_ids]), pipeline.unit_vectors)  # noqa: E731
    assert diverse.item_ids[0] == plain.item_ids[0] and ild(diverse) >= ild(plain)


def test_explanations_name_the_users_own_items(pipeline):
    [answer] = pipeline.recommend([Query("u0", k=3, explain=True)])
    assert len(answer.explanations) == 3
    for explanation in answer.explanations:
        assert {i for i, _ in explanation.because} <= {"i0", "i1", "i3"}
        assert all(title == f"Title {i}" for i, title in explanation.because)
    [plain] = pipeline.recommend([Query("u0", k=3)])
    assert plain.explanations is None and plain.item_ids == answer.item_ids
    [cold] = pipeline.recommend([Query("stranger", k=2, explain=True)])
    assert [e.reasons for e in cold.explanations] == [["most popular in the last 30 days"]] * 2


def test_hidden_file(tmp_path):
    assert read_hidden(hidden_items_file(str(tmp_path))) == frozenset()
    (tmp_path / "hidden_items.txt").write_text("i1\n  i2  # withdrawn\n\n# a comment\n")
    assert read_hidden(hidden_items_file(str(tmp_path))) == {"i1", "i2"}


def test_hidden_items_follow_the_api_id_rule_and_refuse_what_is_not_text(tmp_path):
    from stages.rules import HiddenItemsError, read_hidden

    path = tmp_path / "hidden_items.txt"
    assert read_hidden(str(path)) == frozenset()  # absent: nothing hidden
    path.write_bytes(b"\xef\xbb\xbf50\n100.0  # withdrawn\n 7 \n\n# a comment\nabc\n")
    assert read_hidden(str(path)) == {"50", "100", "7", "abc"}
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(HiddenItemsError, match="not UTF-8 text"):
        read_hidden(str(path))
    path.write_bytes(b"50\x00\x00")
    with pytest.raises(HiddenItemsError, match="NUL"):
        read_hidden(str(path))
    path.unlink()
    path.mkdir()
    with pytest.raises(HiddenItemsError, match="not a file"):
        read_hidden(str(path))
