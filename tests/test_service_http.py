"""The service over real HTTP: `bentoml serve` from the repo and from the built Bento.

Trained once on MovieLens-100K (see ``movielens_run``); every endpoint is
called with good and bad input the way a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import bentoml
import numpy as np
import pytest

from features.store import current_version, read_snapshot, write_snapshot
from serving.runtime import Runtime
from stages.pipeline import Query
from tests.server import REPO, run_until_exit, serve

pytestmark = pytest.mark.slow
KNOWN_USER = "196"


def runtime_of(run, feature_store: str | None = None) -> Runtime:
    return Runtime.from_store(run.ranker_tag, feature_store=feature_store)


@pytest.fixture(scope="session", params=["repo", "bento"])
def server(request, movielens_run, tmp_path_factory):
    """The same API served two ways: from the source tree and from the Bento, elsewhere."""
    run, _ = movielens_run
    env = {"RECSYS_RANKER_TAG": run.ranker_tag, "RECSYS_REFRESH_SECONDS": "0"}
    if request.param == "repo":
        with serve("service:Recommender", env) as live:
            yield live
    else:
        tag = request.getfixturevalue("bento_tag")
        with serve(tag, env, cwd=tmp_path_factory.mktemp("elsewhere")) as live:
            yield live


@pytest.fixture(scope="session")
def client(server):
    with server.client() as http:
        yield http


@pytest.fixture(scope="session")
def offline(movielens_run) -> Runtime:
    return runtime_of(movielens_run[0])


def post(client, path: str, body) -> tuple[int, dict]:
    response = client.post(path, json=body)
    return response.status_code, response.json()


# -- good input ------------------------------------------------------------


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
    assert body["model"] == offline.tags


def test_numeric_ids_are_the_same_user(client):
    assert post(client, "/recommend", {"user_id": 196})[1] == post(client, "/recommend", {"user_id": "196"})[1]


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


def test_cold_start_uses_popularity_and_attributes(client, offline):
    _, plain = post(client, "/recommend", {"user_id": "someone-new", "k": 5})
    assert plain["strategy"] == "popular" and plain["status"] == "success"
    assert plain["message"] == "unknown user: most popular items"
    popular = [str(i) for i in offline.candidates.item_ids[offline.candidates.popular[:5]]]
    assert [r["item_id"] for r in plain["recommendations"]] == popular
    _, young = post(
        client,
        "/recommend",
        {"user_id": "someone-new", "k": 5, "user_attributes": {"age": 19, "occupation": "student"}},
    )
    assert young["message"] == "unknown user: most popular for age=19, occupation=student"
    assert [r["item_id"] for r in young["recommendations"]] != popular


def test_batch_answers_in_order(client):
    requests = [{"user_id": u, "k": 3} for u in ("1", "nobody", "196")]
    status, body = post(client, "/recommend_batch", {"requests": requests})
    assert status == 200
    singles = [post(client, "/recommend", r)[1] for r in requests]
    assert body["results"] == singles
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
    assert body["evaluation"]["models"]["ALS"]["ndcg@10"] > 0.1


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


def test_python_client(server):
    with bentoml.SyncHTTPClient(server.url) as remote:
        answer = remote.recommend({"user_id": KNOWN_USER, "k": 3})
    assert len(answer["recommendations"]) == 3


# -- bad input -------------------------------------------------------------


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
    ],
)
def test_recommend_rejects_bad_fields(client, body, loc, kind):
    status, answer = post(client, "/recommend", body)
    assert status == 400
    assert answer["error"].startswith("1 validation error")
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


def test_oversized_body(client):
    response = client.post("/recommend", content=b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large: 70002 bytes, the limit is 65536"}


def test_oversized_chunked_body(client):
    chunks = iter([b'{"user_id": "196", "pad": "', b"x" * 40_000, b"x" * 40_000, b'"}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body too large")


def test_chunked_body_within_limit_is_served(client):
    chunks = iter([b'{"user_id": ', b'"196", "k": 2}'])
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["recommendations"]) == 2


def test_error_bodies_carry_no_traces_or_paths(client):
    for path, body in [("/recommend", {"user_id": None}), ("/similar_items", {"item_id": "x"})]:
        text = client.post(path, json=body).text
        assert "Traceback" not in text and str(REPO) not in text
        assert not re.search(r"\w+\.py\b", text), text


# -- features swapped under a running server -------------------------------


@pytest.fixture()
def refreshing_server(movielens_run, tmp_path):
    run, trained = movielens_run
    store = tmp_path / "feature_store"
    shutil.copytree(trained / "feature_store", store)
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_FEATURE_STORE": str(store),
        "RECSYS_REFRESH_SECONDS": "0.5",
    }
    with serve("service:Recommender", env) as live:
        yield live, store


def hammer(url: str, stop: threading.Event, failures: list, count: list) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            response = http.post("/recommend", json={"user_id": KNOWN_USER, "k": 10})
            count.append(1)
            if response.status_code != 200:
                failures.append(response.status_code)


def wait_for(predicate, seconds: float = 15) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_feature_snapshot_swapped_without_failed_requests(refreshing_server):
    live, store = refreshing_server
    with live.client() as http:
        _, before = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
        top = before["recommendations"][0]["item_id"]
        snapshot = read_snapshot(str(store))
        snapshot.tables.items.loc[top, "title"] = "Renamed In New Snapshot"
        stop, failures, count = threading.Event(), [], []
        worker = threading.Thread(target=hammer, args=(live.url, stop, failures, count))
        worker.start()
        try:
            new_version = write_snapshot(snapshot.tables, str(store), snapshot.manifest["fingerprint"])
            assert wait_for(lambda: post(http, "/model_info", {})[1]["feature_version"] == new_version)
        finally:
            stop.set()
            worker.join()
        _, after = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    assert failures == [] and len(count) > 10
    assert after["recommendations"][0]["title"] == "Renamed In New Snapshot"


def test_corrupt_snapshot_is_ignored_and_old_one_kept(refreshing_server):
    live, store = refreshing_server
    with live.client() as http:
        _, before = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
        old = current_version(str(store))
        snapshot = read_snapshot(str(store))
        bad = write_snapshot(snapshot.tables, str(store), "c" * 64)
        items = Path(store) / "snapshots" / bad / "items.parquet"
        items.write_bytes(items.read_bytes()[:200])  # truncated after publishing
        assert wait_for(lambda: post(http, "/model_info", {})[1]["feature_refresh_error"] is not None)
        status, info = post(http, "/model_info", {})
        assert info["feature_version"] == old
        assert f"snapshot {bad}" in info["feature_refresh_error"]
        status, after = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
    assert status == 200 and after == before
    assert "feature refresh failed, still serving" in live.log.read_text()


# -- refusing to start -----------------------------------------------------


def test_refuses_mismatched_candidates_model(movielens_run, tmp_path, synthetic_files):
    from tests.conftest import quick_config
    from train.run import train

    other = train(quick_config(tmp_path, interactions=synthetic_files["csv"]["interactions"]), echo=False)
    code, output = run_until_exit(
        "service:Recommender",
        {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_CANDIDATES_TAG": other.candidates_tag},
    )
    assert code != 0
    assert f"was trained against candidates model {movielens_run[0].candidates_tag}" in output


def test_refuses_feature_store_without_needed_features(movielens_run, tmp_path, synthetic_files):
    from tests.conftest import quick_config
    from train.run import train

    config = quick_config(tmp_path, interactions=synthetic_files["csv"]["interactions"])
    train(config, echo=False)
    code, output = run_until_exit(
        "service:Recommender",
        {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_FEATURE_STORE": config.feature_store},
    )
    assert code != 0
    assert "lacks features the ranker needs" in output


def test_batch_cli_matches_pipeline(movielens_run, tmp_path, offline):
    import pandas as pd

    users = tmp_path / "users.txt"
    users.write_text("196\n1\nnew-user\n")
    out = tmp_path / "recs.parquet"
    subprocess.run(
        [sys.executable, "-m", "serving.batch", "--out", str(out), "--k", "5", "--users", str(users)],
        cwd=REPO,
        env={**os.environ, "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag},
        check=True,
    )
    table = pd.read_parquet(out)
    expected = offline.pipeline.recommend([Query(u, k=5) for u in ("196", "1", "new-user")])
    for answer in expected:
        rows = table[table["user_id"] == answer.user_id].sort_values("rank")
        assert rows["item_id"].tolist() == answer.item_ids
        assert rows["strategy"].unique().tolist() == [answer.strategy]
    assert np.isfinite(table["score"]).all()
