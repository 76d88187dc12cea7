"""Impressions and feedback over real HTTP: logged per worker, flushed at shutdown, counted on /metrics."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from features.events import FEEDBACK, IMPRESSIONS, read_events
from tests.support import KNOWN_USER, answer_of, post, serve, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def logging_server(movielens_run, tmp_path):
    """A server whose event log flushes only at shutdown (an hour-long timer, a huge row bound)."""
    run, _ = movielens_run
    log = tmp_path / "events"
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": str(log),
        "RECSYS_EVENT_FLUSH_ROWS": "1000000",
        "RECSYS_EVENT_FLUSH_SECONDS": "3600",
        "RECSYS_WORKERS": "2",
    }
    return env, log


def _feedback_count(metrics: str, outcome: str) -> float:
    found = re.findall(rf'recsys_feedback_total\{{[^}}]*outcome="{outcome}"[^}}]*\}} ([0-9.e+]+)', metrics)
    return sum(float(v) for v in found)


def test_sigterm_under_feedback_load_loses_no_event(logging_server):
    env, log = logging_server
    sent, shown = 0, {}
    with serve("service:Recommender", env) as live, live.client() as http:
        for i in range(40):
            status, body = post(http, "/recommend", {"user_id": str(1 + i % 20), "k": 5})
            assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
            shown[body["request_id"]] = [r["item_id"] for r in body["recommendations"]]
        for request_id, items in shown.items():
            events = [{"user_id": "1", "item_id": item, "request_id": request_id, "type": "click"} for item in items]
            status, body = post(http, "/feedback", {"events": events})
            assert (status, body["accepted"]) == (200, len(events))
            sent += len(events)
        single = post(http, "/feedback", {"user_id": "visitor", "item_id": "50", "timestamp": 893_286_638})
        assert single == (200, {"accepted": 1, "status": "success", "message": None})
        sent += 1
        assert not (log / FEEDBACK).exists()  # nothing flushed yet: all of it waits for shutdown
        # No per-user state: the same request on new connections (either worker) gets the same answer.
        same = {"user_id": "visitor", "k": 5, "recent_items": ["50", {"item_id": "172", "weight": 4}]}
        answers = [httpx.post(f"{live.url}/recommend", json=same, timeout=30).json() for _ in range(12)]
        assert len({json.dumps(answer_of(a), sort_keys=True) for a in answers}) == 1
        shown.update({a["request_id"]: [r["item_id"] for r in a["recommendations"]] for a in answers})
    # `serve` stopped the server with SIGTERM.
    feedback = read_events(str(log), FEEDBACK).to_pandas()
    impressions = read_events(str(log), IMPRESSIONS).to_pandas()
    assert len(feedback) == sent
    assert len(impressions) == 5 * len(shown)
    assert impressions["user_id"].value_counts()["visitor"] == 5 * 12
    assert set(impressions["request_id"]) == set(shown)
    visitor = feedback[feedback["user_id"] == "visitor"].iloc[0]
    assert (visitor["item_id"], visitor["timestamp"], visitor["weight"]) == ("50", 893_286_638, 1.0)
    assert impressions.groupby("request_id")["position"].apply(list).map(lambda p: p == [1, 2, 3, 4, 5]).all()


def test_feedback_on_a_recommended_item_is_counted(client):
    _, answer = post(client, "/recommend", {"user_id": KNOWN_USER, "k": 3})
    before = client.get("/metrics").text
    item = answer["recommendations"][0]["item_id"]
    events = [
        {"user_id": KNOWN_USER, "item_id": item, "request_id": answer["request_id"]},
        {"user_id": KNOWN_USER, "item_id": "1", "request_id": answer["request_id"]},
        {"user_id": KNOWN_USER, "item_id": "2"},
    ]
    assert post(client, "/feedback", {"events": events})[0] == 200
    after = client.get("/metrics").text
    changes = {o: _feedback_count(after, o) - _feedback_count(before, o) for o in ("recommended", "unknown")}
    assert changes == {"recommended": 1, "unknown": 1}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"events": []}, ["events"]),
        ({"user_id": "1"}, ["events", 0, "item_id"]),
        ({"user_id": "1", "item_id": "2", "weight": -1}, ["events", 0, "weight"]),
        ({"user_id": "1", "item_id": "2", "type": "Not A Type"}, ["events", 0, "type"]),
        ({"user_id": "1", "item_id": "2", "request_id": "../etc"}, ["events", 0, "request_id"]),
        ({"events": [{"user_id": "1", "item_id": "2"}] * 501}, ["events"]),
        # What training would read as missing ids, a timestamp in milliseconds, or a weight float32 rounds to 0.
        ({"user_id": "None", "item_id": "2"}, ["events", 0, "user_id"]),
        ({"events": [{"user_id": "1", "item_id": "2"}, {"user_id": "1", "item_id": "N/A"}]}, ["events", 1, "item_id"]),
        ({"user_id": "1", "item_id": "2", "timestamp": 1_764_400_000_000}, ["events", 0, "timestamp"]),
        # Dates training would refuse: 0 stretched the retrained data back to 1970, 2099 crashed it.
        ({"user_id": "1", "item_id": "2", "timestamp": 0}, ["events", 0, "timestamp"]),
        ({"user_id": "1", "item_id": "2", "timestamp": 4_102_444_799}, ["events", 0, "timestamp"]),
        ({"user_id": "1", "item_id": "2", "weight": 1e-300}, ["events", 0, "weight"]),
    ],
)
def test_bad_feedback_gets_400_naming_the_field(client, body, location):
    status, answer = post(client, "/feedback", body)
    assert status == 400
    assert any(error["loc"][: len(location)] == location for error in answer["detail"])


def test_feedback_is_503_while_the_log_cannot_be_written_and_every_acknowledged_event_is_kept(movielens_run, tmp_path):
    """The log's directory turns into a file under a running server: 503 with Retry-After, never a 200 then dropped."""
    log = tmp_path / "events"
    env = {
        "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag,
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": str(log),
        "RECSYS_EVENT_FLUSH_SECONDS": "0.2",
    }
    acknowledged = 0

    def send(http: httpx.Client, n: int) -> httpx.Response:
        nonlocal acknowledged
        events = [
            {"user_id": "1", "item_id": str(1 + (acknowledged + i) % 50), "timestamp": 893_286_638} for i in range(n)
        ]
        response = http.post("/feedback", json={"events": events})
        if response.status_code == 200:
            acknowledged += response.json()["accepted"]
        return response

    with serve("service:Recommender", env) as live, live.client() as http:
        assert send(http, 3).status_code == 200
        assert wait_for(lambda: (log / FEEDBACK).exists())
        log.rename(tmp_path / "written-before")
        log.write_text("the disk is gone")  # every write now fails
        assert wait_for(lambda: send(http, 2).status_code == 503)
        refused = send(http, 2)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["status"] == "error" and "event log cannot be written" in refused.json()["message"]
        assert post(http, "/recommend", {"user_id": KNOWN_USER, "k": 3})[0] == 200  # answers go on
        log.unlink()  # the disk is back: what was acknowledged is written, feedback accepted again
        assert wait_for(lambda: send(http, 1).status_code == 200)
        assert send(http, 4).status_code == 200
        output = live.log.read_text()
    written = len(read_events(str(tmp_path / "written-before"), FEEDBACK)) + len(read_events(str(log), FEEDBACK))
    assert written == acknowledged
    assert output.count("event log: cannot write") <= 2 and "Traceback" not in output
