"""The HTTP API over real HTTP: `bentoml serve` from the repo and from the built Bento.

Trained once on MovieLens-100K (``movielens_run``); every endpoint is called
with good and bad input the way a user would (fixtures ``server``, ``client``
and ``offline`` in conftest).
"""

from __future__ import annotations

import json
import re

import bentoml
import numpy as np
import pytest

from serving.api_page import VERSION
from stages.pipeline import Query
from tests.support import KNOWN_USER, REPO, answer_of, post

pytestmark = pytest.mark.slow


def test_recommend_known_user(client, offline):
    status, body = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    assert status == 200
    assert body["status"] == "success" and body["message"] is None and body["strategy"] == "two_stage"
    items = [r["item_id"] for r in body["recommendations"]]
    assert len(items) == 10 == len(set(items))
    assert [r["rank"] for r in body["recommendations"]] == list(range(1, 11))
    scores = [r["score"] for r in body["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["title"] for r in body["recommendations"])
    user = offline.candidates.user_index[KNOWN_USER]
    seen = set(offline.candidates.item_ids[offline.candidates.seen[user].indices])
    assert not seen & set(items)
    assert body["model"] == offline.tags.model_dump()


def test_numeric_ids_are_the_same_user(client):
    by_number, by_text = (post(client, "/recommend", {"user_id": u})[1] for u in (196, "196"))
    assert answer_of(by_number) == answer_of(by_text)


def test_served_ranking_equals_offline_pipeline(client, offline):
    users = ["1", "196", "405", "655", "943", "not-a-user"]
    expected = offline.pipeline.recommend([Query(u, k=20) for u in users])
    for user, want in zip(users, expected, strict=True):
        _, body = post(client, "/recommend", {"user_id": user, "k": 20})
        assert [r["item_id"] for r in body["recommendations"]] == want.item_ids
        assert [r["score"] for r in body["recommendations"]] == pytest.approx(want.scores, abs=1e-6)


def test_exclusions(client):
    _, first = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 5})
    dropped = [r["item_id"] for r in first["recommendations"][:2]]
    _, second = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 5, "exclude_items": dropped})
    assert not set(dropped) & {r["item_id"] for r in second["recommendations"]}
    _, with_seen = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 100, "exclude_seen": False})
    assert len(with_seen["recommendations"]) == 100


def test_cold_start_is_recent_popularity_as_the_backtest_chose(client, offline):
    # On MovieLens-100K the backtest picks the last 30 days and gives segments no weight.
    assert offline.card.evaluation["backtest"]["cold_start"] == {"days": 30, "segment_weight": 0.0}
    _, plain = post(client, "/recommend", {"user_id": "someone-new", "k": 5})
    assert plain["strategy"] == "popular" and plain["status"] == "success"
    assert plain["message"] == "unknown user: most popular in the last 30 days"
    share = offline.candidates.cold_share
    popular = [str(i) for i in offline.candidates.item_ids[np.lexsort((np.arange(len(share)), -share))[:5]]]
    assert [r["item_id"] for r in plain["recommendations"]] == popular
    _, young = post(
        client,
        "/recommend",
        {"user_id": "someone-new", "k": 5, "user_attributes": {"age": 19, "occupation": "student"}},
    )
    assert young["message"] == (
        "unknown user: most popular in the last 30 days (attributes not used: segments got no weight in the backtest)"
    )
    assert young["recommendations"] == plain["recommendations"]


def test_batch_answers_in_order(client):
    requests = [{"user_id": u, "k": 3} for u in ("1", "nobody", "196")]
    status, body = post(client, "/recommend_batch", {"requests": requests})
    assert status == 200
    singles = [answer_of(post(client, "/recommend", r)[1]) for r in requests]
    assert [answer_of(r) for r in body["results"]] == singles
    assert len({r["request_id"] for r in body["results"]}) == 3  # each answer its own id
    assert [r["strategy"] for r in body["results"]] == ["two_stage", "popular", "two_stage"]


def test_similar_items(client):
    status, body = post(client, "/similar_items", {"item_id": 50, "k": 5})  # Star Wars
    assert status == 200 and body["status"] == "success"
    titles = [r["title"] for r in body["recommendations"]]
    assert len(titles) == 5 and "Star Wars" not in titles
    assert "Return of the Jedi" in titles


def test_model_info(client, movielens_run):
    run, _ = movielens_run
    status, body = post(client, "/model_info", {})
    assert status == 200
    assert body["model"] == {"candidates": run.candidates_tag, "ranker": run.ranker_tag}
    assert body["dataset"] == "MovieLens-100K" and body["n_users"] == 943
    assert body["feature_version"] == run.feature_version
    assert body["evaluation"]["backtest"]["mean"] == run.evaluation["backtest"]["mean"]  # the backtest leads
    assert body["evaluation"]["per_user_split"]["models"]["ALS"]["ndcg@10"] > 0.1


def test_probes_metrics_and_openapi(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    post(client, "/recommend", {"user_id": "metrics-probe-user"})
    metrics = client.get("/metrics").text
    cold = [line for line in metrics.splitlines() if line.startswith("recsys_cold_start_total")]
    assert cold and float(cold[0].split()[-1]) >= 1
    assert "recsys_filtered_items_total" in metrics
    spec = client.get("/docs.json").json()
    assert set(spec["paths"]) >= {"/recommend", "/recommend_batch", "/similar_items", "/model_info"}
    assert "example" in json.dumps(spec["components"]["schemas"]["RecommendRequest"])
    # Named after our models, every reference resolving (BentoML's own names end in IODescriptor).
    text = json.dumps(spec)
    assert "IODescriptor" not in text
    assert set(re.findall(r'"#/components/schemas/([^"]+)"', text)) <= set(spec["components"]["schemas"])


def test_the_api_page_is_this_apis_and_loads_only_from_this_server(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "recsys" in page.text and "://" not in page.text  # no Google Tag Manager, no GitHub corner
    for link in re.findall(r'(?:src|href)="\./([^"]+)"', page.text):
        assert client.get(f"/{link}").status_code == 200, link
    spec = client.get("/docs.json").json()
    assert spec["info"]["title"] == "recsys" and spec["info"]["version"] == VERSION
    assert "://" not in spec["info"]["description"] and "contact" not in spec["info"]


def test_python_client(server):
    with bentoml.SyncHTTPClient(server.url) as remote:
        answer = remote.recommend({"user_id": KNOWN_USER, "k": 3})
    assert len(answer["recommendations"]) == 3


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({}, ["user_id"], "missing"),
        ({"user_id": ["196"]}, ["user_id"], "value_error"),
        ({"user_id": True}, ["user_id"], "value_error"),
        ({"user_id": ""}, ["user_id"], "value_error"),
        ({"user_id": "196", "k": 0}, ["k"], "greater_than_equal"),
        ({"user_id": "196", "k": 101}, ["k"], "less_than_equal"),
        ({"user_id": "196", "k": "10"}, ["k"], "int_type"),
        ({"user_id": "196", "exclude_seen": "no"}, ["exclude_seen"], "bool_type"),
        ({"user_id": "196", "exclude_items": "50"}, ["exclude_items"], "list_type"),
        ({"user_id": "196", "kk": 3}, ["kk"], "extra_forbidden"),
        # Numbers pydantic's finiteness check used to overflow on (a 500, for every request batched with it).
        ({"user_id": "x", "user_attributes": {"age": 2 * 10**18}}, ["user_attributes", "age"], "value_error"),
        (
            {"user_id": "196", "filters": {"release_year": {"gte": 2 * 10**18}}},
            ["filters", "release_year", "gte"],
            "less_than_equal",
        ),
        (
            {"user_id": "196", "recent_items": [{"item_id": "50", "timestamp": 10**13}]},
            ["recent_items", 0, "timestamp"],
            "less_than_equal",
        ),
        # The documented range of an integer id (19 digits passed the edge and were served).
        ({"user_id": -(10**19) + 1}, ["user_id"], "value_error"),
        # Bounded like ids and attributes: a 400 echoes them (a 1 MB name made a 4 MB answer).
        (
            {"user_id": "196", "filters": {"g" * 65: {"include": ["a"]}}},
            ["filters", "g" * 65, "[key]"],
            "string_too_long",
        ),
        (
            {"user_id": "196", "filters": {"genres": {"include": ["a" * 257]}}},
            ["filters", "genres", "include", 0],
            "string_too_long",
        ),
    ],
)
def test_recommend_rejects_bad_fields(client, body, loc, kind):
    status, answer = post(client, "/recommend", body)
    assert status == 400
    assert answer["status"] == "error" and answer["error"] == "bad_request"
    assert answer["message"].startswith(f"invalid request: {'.'.join(map(str, loc))}: ")
    assert [(d["loc"], d["type"]) for d in answer["detail"]] == [(loc, kind)]


def test_batch_limits(client):
    status, answer = post(client, "/recommend_batch", {"requests": [{"user_id": "1"}] * 101})
    assert status == 400 and answer["detail"][0]["loc"] == ["requests"] and answer["detail"][0]["type"] == "too_long"
    status, answer = post(client, "/recommend_batch", {"requests": []})
    assert status == 400 and answer["detail"][0]["type"] == "too_short"
    status, answer = post(client, "/recommend_batch", {"requests": [{"user_id": "1"}, {"user_id": "1", "k": -1}]})
    assert status == 400 and answer["detail"][0]["loc"] == ["requests", 1, "k"]


def test_unknown_item_for_similar_items(client):
    status, answer = post(client, "/similar_items", {"item_id": "99999", "k": 3})
    assert status == 404
    assert answer["status"] == "error" and answer["recommendations"] == []
    assert answer["message"] == "unknown item_id '99999': not in the model's catalogue"


def test_body_that_is_not_json(client):
    response = client.post("/recommend", content=b"{user_id: 196", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_error_bodies_carry_no_traces_or_paths(client):
    for path, body in [("/recommend", {"user_id": None}), ("/similar_items", {"item_id": "x"})]:
        text = client.post(path, json=body).text
        assert "Traceback" not in text and str(REPO) not in text
        assert not re.search(r"\w+\.py\b", text), text
