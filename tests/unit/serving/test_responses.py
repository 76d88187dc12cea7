"""From pipeline answers to the API's envelope: ranks, fields, and the counters /metrics shows."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from serving import responses
from serving.api_models import ModelTags, RecommendRequest
from serving.responses import answer, ranked, to_queries, to_responses
from stages.pipeline import POPULAR, TWO_STAGE, Query, Recommendation
from stages.rules import RuleError

TAGS = ModelTags(candidates="recsys-candidates:a", ranker="recsys-ranker:b")


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


@pytest.fixture()
def counters(monkeypatch) -> dict[str, FakeCounter]:
    fakes = {"cold": FakeCounter(), "filtered": FakeCounter()}
    monkeypatch.setattr(responses, "COLD_STARTS", fakes["cold"])
    monkeypatch.setattr(responses, "FILTERED_ITEMS", fakes["filtered"])
    return fakes


def warm(user: str = "u1") -> Recommendation:
    return Recommendation(user, ["b", "a"], [0.9, 0.5], ["B", None], TWO_STAGE)


def cold(user: str = "new") -> Recommendation:
    return Recommendation(user, ["p"], [1.0], ["P"], POPULAR, "unknown user: most popular items")


def test_ranked_numbers_from_one_in_the_order_given():
    items = ranked(["x", "y", "z"], [3.0, 1.0, 2.0], ["X", None, "Z"])
    assert [(i.item_id, i.score, i.rank, i.title) for i in items] == [
        ("x", 3.0, 1, "X"),
        ("y", 1.0, 2, None),
        ("z", 2.0, 3, "Z"),
    ]
    assert ranked([], [], []) == []


def test_ranked_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError):
        ranked(["x", "y"], [1.0], ["X", "Y"])


def test_to_responses_envelope(counters):
    first, second = to_responses([warm(), cold()], TAGS)
    assert re.fullmatch("[0-9a-f]{32}", first.request_id) and first.request_id != second.request_id
    assert first.model_dump(exclude={"request_id"}) == {
        "user_id": "u1",
        "recommendations": [
            {"item_id": "b", "score": 0.9, "rank": 1, "title": "B"},
            {"item_id": "a", "score": 0.5, "rank": 2, "title": None},
        ],
        "status": "success",
        "message": None,
        "strategy": "two_stage",
        "model": {"candidates": "recsys-candidates:a", "ranker": "recsys-ranker:b"},
    }
    assert second.strategy == "popular" and second.message == "unknown user: most popular items"
    assert [r.item_id for r in second.recommendations] == ["p"] and second.status == "success"


def test_cold_starts_are_counted(counters):
    to_responses([warm(), cold("n1"), cold("n2")], TAGS)
    assert counters["cold"].value == 2
    to_responses([warm()], TAGS)
    assert counters["cold"].value == 2


def test_to_queries_keeps_every_field():
    request = RecommendRequest(user_id=7, k=3, exclude_seen=False, exclude_items=["a", 5], user_attributes={"age": 30})
    assert to_queries([request]) == [Query("7", 3, False, ["a", "5"], {"age": 30})]


def test_answer_counts_filtered_items_and_answers_in_order(counters):
    class FakePipeline:
        def filtered_count(self, query: Query) -> int:
            return {"u1": 4, "new": 1}[query.user_id]

        def recommend(self, queries: list[Query]) -> list[Recommendation]:
            return [warm(q.user_id) if q.user_id == "u1" else cold(q.user_id) for q in queries]

    requests = [RecommendRequest(user_id="u1"), RecommendRequest(user_id="new", exclude_items=["x"])]
    answers = answer(FakePipeline(), requests, TAGS)
    assert [a.user_id for a in answers] == ["u1", "new"]
    assert counters["filtered"].value == 5 and counters["cold"].value == 1


def test_a_filter_the_catalogue_refuses_in_the_call_is_a_400_for_its_request_and_counts_nothing(counters):
    # What a feature refresh between check_requests and the call (or a caller that did not check) leads to.
    class Catalogue:
        def check(self, filters) -> None:
            if filters:
                raise RuleError("filters.genres.include", "unknown value 'x'")

    class FakePipeline:
        view = SimpleNamespace(catalogue=Catalogue())

        def filtered_count(self, query: Query) -> int:
            return 3

        def recommend(self, queries: list[Query]) -> list[Recommendation]:
            for query in queries:
                self.view.catalogue.check(query.rules)
            return [warm(q.user_id) for q in queries]

    requests = [RecommendRequest(user_id="u1"), RecommendRequest(user_id="u2", filters={"genres": {"include": ["x"]}})]
    with pytest.raises(ValidationError) as raised:
        answer(FakePipeline(), requests, TAGS)
    assert [(e["loc"], e["msg"]) for e in raised.value.errors()] == [
        (("requests", 1, "filters", "genres", "include"), "unknown value 'x'")
    ]
    assert counters["filtered"].value == 0


@pytest.mark.parametrize("sent", [160, "160", "160.0", " 160 ", "160.00"])
def test_request_ids_follow_the_data_id_rule(sent):
    """A client asking for 160 in any of these spellings reaches the user the data spelled 160 or 160.0."""
    request = RecommendRequest(user_id=sent, exclude_items=[" 7.0 "])
    assert request.user_id == "160" and request.exclude_items == ["7"]
