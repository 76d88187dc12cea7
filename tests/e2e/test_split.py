"""The split topology over real HTTP: the one-process answers, no request lost under load, the same start-up guard.

``bentoml serve split_service:Entry`` starts the entry and both stage services
in one command (BentoML 1.4 serves a service's dependencies with it); the
Kubernetes form, each stage served on its own and found by URL, is served too.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from contextlib import ExitStack

import httpx
import pytest

from benchmarks.loadgen import fixed_concurrency, recommend_bodies
from serving.api_models import RecommendRequest
from serving.responses import to_queries
from stages import rules
from stages.pipeline import Query
from stages.rules import HIDDEN_ITEMS_FILE
from tests.support import FIGURES, KNOWN_USER, REPO, free_port, post, run_until_exit, serve
from tests.support import running as running_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(movielens_run) -> dict[str, str]:
    return {
        "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag,
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": "",
    }


@pytest.fixture(scope="module")
def split(env, tmp_path_factory):
    with serve("split_service:Entry", {**env, "RECSYS_EVENT_LOG": str(tmp_path_factory.mktemp("events"))}) as live:
        yield live


@pytest.fixture(scope="module")
def split_client(split):
    with split.client() as http:
        yield http


def _items(body: dict) -> list[str]:
    return [r["item_id"] for r in body["recommendations"]]


CASES = [
    {"user_id": KNOWN_USER, "k": 10},
    {"user_id": "stranger", "k": 10},
    {"user_id": "1", "k": 5, "exclude_items": ["50", "100"]},
    {"user_id": "7", "k": 10, "exclude_seen": False},
    {"user_id": "stranger", "k": 10, "user_attributes": {"age": 30}},
    {"user_id": "visitor", "k": 10, "recent_items": [{"item_id": "50", "timestamp": 893_286_638, "weight": 5}, 172]},
    {"user_id": KNOWN_USER, "k": 10, "recent_items": ["100", "not-an-item"]},
    {"user_id": KNOWN_USER, "k": 5, "offset": 5, "explain": True},  # explained, from place 6 (explain was a 500)
    {"user_id": "stranger", "k": 3, "offset": 3, "explain": True},
]


def single_process(offline, bodies: list[dict]):
    """What ``service:Recommender`` answers: the same request conversion, the pipeline in-process."""
    return offline.pipeline.recommend(to_queries([RecommendRequest.model_validate(b) for b in bodies]))


@pytest.mark.parametrize("body", CASES, ids=lambda c: str(c)[:48])
def test_split_answers_equal_the_single_process_pipeline(split_client, offline, body):
    [want] = single_process(offline, [body])
    status, got = post(split_client, "/recommend", body)
    assert status == 200, got
    assert _items(got) == want.item_ids
    assert [r["score"] for r in got["recommendations"]] == [pytest.approx(s, abs=1e-6) for s in want.scores]
    assert (got["strategy"], got["message"]) == (want.strategy, want.message)
    assert got["model"] == offline.tags.model_dump() and got["request_id"]
    first = body.get("offset", 0) + 1
    assert [r["rank"] for r in got["recommendations"]] == list(range(first, first + len(want.item_ids)))
    if body.get("explain"):
        assert want.explanations is not None
        assert [r.get("reasons", []) for r in got["recommendations"]] == [e.reasons for e in want.explanations]
        assert [[b["item_id"] for b in r.get("because", [])] for r in got["recommendations"]] == [
            [i for i, _ in e.because] for e in want.explanations
        ]


def test_a_batch_is_answered_as_one_process_answers_it(split_client, offline):
    want = single_process(offline, CASES)
    status, got = post(split_client, "/recommend_batch", {"requests": CASES})
    assert status == 200
    assert [_items(r) for r in got["results"]] == [w.item_ids for w in want]


def test_similar_items_model_info_and_errors(split_client, offline):
    status, body = post(split_client, "/similar_items", {"item_id": "50", "k": 5})
    ids, scores, _ = offline.pipeline.similar(offline.candidates.item_index["50"], 5)
    assert status == 200 and _items(body) == ids and [r["score"] for r in body["recommendations"]] == scores
    status, body = post(split_client, "/similar_items", {"item_id": "no-such-item", "k": 5})
    assert status == 404 and body["status"] == "error"
    info = split_client.post("/model_info").json()
    assert info["model"] == offline.tags.model_dump() and info["n_candidates"] == offline.pipeline.n_candidates
    status, body = post(split_client, "/recommend", {"user_id": KNOWN_USER, "k": 0})
    assert status == 400
    status, body = post(split_client, "/feedback", {"user_id": KNOWN_USER, "item_id": "50"})
    assert status == 200 and body["accepted"] == 1


def test_filters_and_hidden_items_apply_as_in_one_process(env, movielens_run, offline, tmp_path):
    """Rules in the split form: hidden items blocked where candidates are made, filters on every route."""
    _, trained = movielens_run
    store = tmp_path / "feature_store"
    shutil.copytree(trained / "feature_store", store)
    fifty = offline.candidates.item_index["50"]
    top = offline.pipeline.recommend([Query(KNOWN_USER, k=1)])[0].item_ids[0]
    nearest = offline.pipeline.similar(fifty, 1)[0][0]
    (store / HIDDEN_ITEMS_FILE).write_text(f"{top}\n{nearest}\n")
    hidden = offline.pipeline.with_hidden(frozenset({top, nearest}))
    comedy = {"genres": {"include": ["Comedy"]}}
    with serve("split_service:Entry", {**env, "RECSYS_FEATURE_STORE": str(store)}) as live, live.client() as http:
        status, body = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})
        assert status == 200 and top not in _items(body)
        assert _items(body) == hidden.recommend([Query(KNOWN_USER, k=10)])[0].item_ids
        status, body = post(http, "/similar_items", {"item_id": "50", "k": 5, "filters": comedy})
        expected = hidden.similar(fifty, 5, rules.as_filters({"genres": rules.AttributeFilter(include=("Comedy",))}))
        assert status == 200 and _items(body) == expected[0] and nearest not in _items(body)
        status, body = post(
            http, "/similar_items", {"item_id": "50", "k": 5, "filters": {"release_year": {"gte": 3000}}}
        )
        assert (status, _items(body)) == (200, []) and body["message"].startswith("only 0 similar items")
        # Filters the catalogue cannot apply: the 400 one process gives, naming the field (was a 500, or ignored).
        bad = {"genres": {"include": ["NotAGenre"]}}
        status, body = post(http, "/recommend", {"user_id": KNOWN_USER, "filters": bad})
        assert status == 400 and body["detail"][0]["loc"] == ["filters", "genres", "include"]
        assert body["message"].count("filters.genres.include") == 1
        status, body = post(
            http, "/recommend_batch", {"requests": [{"user_id": "1"}, {"user_id": "2", "filters": bad}]}
        )
        assert status == 400 and body["detail"][0]["loc"] == ["requests", 1, "filters", "genres", "include"]
        status, body = post(http, "/similar_items", {"item_id": "50", "filters": bad})
        assert status == 400 and body["detail"][0]["loc"] == ["filters", "genres", "include"]


def test_a_short_load_loses_nothing(split, offline):
    users = [str(u) for u in offline.candidates.user_ids]
    bodies = recommend_bodies(users, 2000, seed=3)
    for concurrency in (8, 32, 64):  # 64: the burst that once queued past the timeout (BENCHMARKS.md)
        result = asyncio.run(fixed_concurrency(f"{split.url}/recommend", bodies, concurrency, 4))
        summary = result.summary()
        FIGURES.append(f"split topology, {concurrency} connections, 4 s: {summary}")
        assert result.ok > 0
        assert result.n_errors == 0, result.errors


def test_refuses_a_ranker_that_does_not_match_the_candidates_model(movielens_run, small_run):
    code, output = run_until_exit(
        "split_service:Entry",
        {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_CANDIDATES_TAG": small_run[0].candidates_tag},
    )
    assert code != 0
    assert f"was trained against candidates model {movielens_run[0].candidates_tag}" in output


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stage(name: str, env: dict[str, str], log, port: int | None = None):
    """One stage served alone, as a Kubernetes pod of deploy/kubernetes/split.yaml runs it."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bentoml_cli._internal.start", "start-http-server", "--service-name", name]
    command += ["--host", "127.0.0.1", "--port", str(port), "split_service:Entry"]
    return url, running_process(command, lambda: _ready(url), REPO, env, log, timeout=120)


def test_stages_served_apart_answer_as_one_process_then_503_while_down_then_name_the_model_redeployed(
    env, movielens_run, small_run, offline, tmp_path
):
    """Each stage served on its own and found by URL, as the pods of deploy/kubernetes/split.yaml run them: the
    one-process answers. While the stages are down every route answers 503 with Retry-After (it was a 500 with a
    traceback per request for the whole outage); redeployed on another model, answers name the model that made
    them (the entry kept the first model's tags forever). One entry all along: five server starts, not eight."""
    ports = {"recsys-candidates": free_port(), "recsys-ranker": free_port()}
    urls = {
        "RECSYS_SPLIT_CANDIDATES_URL": f"http://127.0.0.1:{ports['recsys-candidates']}",
        "RECSYS_SPLIT_RANKER_URL": f"http://127.0.0.1:{ports['recsys-ranker']}",
    }

    def stages(run, slot: int):
        stage_env = {**env, "RECSYS_RANKER_TAG": run.ranker_tag}
        return [_stage(name, stage_env, tmp_path / f"{name}-{slot}.log", port)[1] for name, port in ports.items()]

    log = tmp_path / "entry.log"
    first, second = stages(movielens_run[0], 0), stages(small_run[0], 1)
    with ExitStack() as entry:
        with first[0], first[1]:
            live = entry.enter_context(serve("split_service:Entry", {**env, **urls}, log=log))
            http = entry.enter_context(live.client())
            for body, want in zip(CASES, single_process(offline, CASES), strict=True):
                status, got = post(http, "/recommend", body)
                assert status == 200 and _items(got) == want.item_ids
                assert got["model"]["ranker"] == movielens_run[0].ranker_tag
        for _ in range(30):
            response = http.post("/recommend", json={"user_id": KNOWN_USER, "k": 5})
            assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
            assert "cannot be reached" in response.json()["message"]
        for path, body in (("/similar_items", {"item_id": "50", "k": 5}), ("/model_info", {})):
            response = http.post(path, json=body)
            assert response.status_code == 503 and "retry-after" in response.headers, path
        with second[0], second[1]:
            status, got = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 3})
            assert status == 200 and got["model"]["ranker"] == small_run[0].ranker_tag
    output = log.read_text()
    assert "Service recsys-candidates initialized" not in output  # the entry served alone: only its own service
    assert "Traceback" not in output
    assert output.count("a stage service cannot be reached") <= 12  # one kind of line: rate-limited
