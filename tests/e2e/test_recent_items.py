"""`recent_items` over real HTTP: fresh activity changes the answer within one request, with no server state."""

from __future__ import annotations

import pytest

from stages.pipeline import Query, RecentEvent
from tests.support import KNOWN_USER, answer_of, post

pytestmark = pytest.mark.slow


def _items(body: dict) -> list[str]:
    return [r["item_id"] for r in body["recommendations"]]


def test_a_known_users_recent_items_change_the_answer_and_are_not_recommended(client):
    _, before = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    watched = _items(before)[:3]
    status, after = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 10, "recent_items": watched})
    assert status == 200 and after["strategy"] == "two_stage"
    assert after["message"] == "3 recent items used"
    assert not set(watched) & set(_items(after))
    assert _items(after) != _items(before)[3:] + _items(after)[7:]  # not just the old list shifted up
    # Nothing is remembered: the next plain request is answered as before.
    assert answer_of(post(client, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1]) == answer_of(before)


def test_an_anonymous_visitor_with_recent_items_gets_the_two_stage_answer(client):
    recent = [{"item_id": "50", "timestamp": 893_286_638, "weight": 5}, "172", 181, "not-an-item"]
    status, body = post(client, "/recommend", {"user_id": "visitor-1", "k": 5, "recent_items": recent})
    assert status == 200 and body["strategy"] == "two_stage"
    assert body["message"] == "unknown user: ranked from 3 recent items, 1 ignored (not in the model's catalogue)"
    assert len(body["recommendations"]) == 5
    assert not {"50", "172", "181"} & set(_items(body))
    # Star Wars, Empire, Return of the Jedi in: something else than the plain popular list out.
    _, popular = post(client, "/recommend", {"user_id": "visitor-1", "k": 5})
    assert popular["strategy"] == "popular" and _items(popular) != _items(body)


def test_served_answers_equal_the_offline_pipeline(client, offline):
    recent = [RecentEvent("50", 893_286_638, 5.0), RecentEvent("100")]
    expected = offline.pipeline.recommend(
        [Query("1", k=10, recent_items=recent), Query("stranger", k=10, recent_items=recent)]
    )
    for user, want in zip(("1", "stranger"), expected, strict=True):
        body = {
            "user_id": user,
            "k": 10,
            "recent_items": [{"item_id": "50", "timestamp": 893_286_638, "weight": 5}, "100"],
        }
        _, got = post(client, "/recommend", body)
        assert _items(got) == want.item_ids
        assert [r["score"] for r in got["recommendations"]] == pytest.approx(want.scores, abs=1e-6)
    _, batch = post(
        client,
        "/recommend_batch",
        {"requests": [{"user_id": "stranger", "k": 10, "recent_items": ["50", "100"]}, {"user_id": "1", "k": 3}]},
    )
    [stranger] = offline.pipeline.recommend(
        [Query("stranger", k=10, recent_items=[RecentEvent("50"), RecentEvent("100")])]
    )
    assert _items(batch["results"][0]) == stranger.item_ids


@pytest.mark.parametrize(
    ("recent", "location"),
    [
        ([True], ["recent_items", 0]),
        ([{"item_id": "50", "weight": 0}], ["recent_items", 0, "weight"]),
        ([{"item_id": "50", "timestamp": "yesterday"}], ["recent_items", 0, "timestamp"]),
        ([{"item": "50"}], ["recent_items", 0, "item_id"]),
        (["50"] * 101, ["recent_items"]),
    ],
)
def test_bad_recent_items_get_400_naming_the_field(client, recent, location):
    status, body = post(client, "/recommend", {"user_id": KNOWN_USER, "recent_items": recent})
    assert status == 400
    assert any(error["loc"][: len(location)] == location for error in body["detail"])
