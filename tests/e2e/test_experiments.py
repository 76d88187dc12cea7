"""An online experiment over real HTTP: answers name their arm, a user keeps it, the file changes under load.

Two arms over the MovieLens pair (the second names the served ranker's tag:
another pair's loading is tests/unit/serving/test_experiments.py), the file
re-read every second, impressions logged with their arm and read back by the
report.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from features.events import FEEDBACK, IMPRESSIONS, read_events
from tests.support import run_until_exit, serve
from train.experiments import experiment_report, shadow_report

pytestmark = pytest.mark.slow
USERS = [str(u) for u in range(1, 101)]  # one batch holds at most 100


def write(path: Path, spec: dict | str) -> None:
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def arms_spec(ranker: str, name: str = "exp") -> dict:
    """Two arms, and a shadow scoring every request with the popularity baseline."""
    arms = [{"name": "control", "weight": 1}, {"name": "other", "weight": 1, "ranker": ranker}]
    return {"name": name, "arms": arms, "shadow": {"name": "shade", "strategy": "popular", "share": 1.0}}


def until(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


@pytest.fixture(scope="module")
def experiment_server(movielens_run, tmp_path_factory):
    run, _ = movielens_run
    tmp = tmp_path_factory.mktemp("experiments")
    spec, events = tmp / "experiments.json", tmp / "events"
    write(spec, arms_spec(run.ranker_tag))
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_EXPERIMENTS": str(spec),
        "RECSYS_REFRESH_SECONDS": "1",
        "RECSYS_EVENT_LOG": str(events),
        "RECSYS_EVENT_FLUSH_SECONDS": "0.5",
    }
    with serve("service:Recommender", env) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        yield http, spec, events, run


def test_every_answer_names_its_arm_and_a_user_keeps_it(experiment_server):
    http, _, _, run = experiment_server
    first = {u: http.post("/recommend", json={"user_id": u, "k": 3}).json() for u in USERS}
    batch = http.post("/recommend_batch", json={"requests": [{"user_id": u, "k": 3} for u in USERS]}).json()
    assert {a["experiment"]["name"] for a in first.values()} == {"exp"}
    arms = {u: a["experiment"]["arm"] for u, a in first.items()}
    assert arms == {r["user_id"]: r["experiment"]["arm"] for r in batch["results"]}
    assert 28 <= Counter(arms.values())["control"] <= 72  # half of 100, give or take 4.4 standard deviations
    assert all(a["experiment"]["share"] == 0.5 and not a["experiment"]["forced"] for a in first.values())
    assert {a["model"]["ranker"] for a in first.values()} == {run.ranker_tag}
    info = http.post("/model_info").json()["experiment"]
    assert info["name"] == "exp" and [a["name"] for a in info["arms"]] == ["control", "other"]
    assert info["error"] is None
    metrics = http.get("/metrics").text
    assert 'recsys_experiment_answers_total{arm="control",experiment="exp",forced="false"}' in metrics


def test_a_forced_arm_is_served_and_said_and_a_missing_one_is_a_400(experiment_server):
    http, _, _, _ = experiment_server
    answer = http.post("/recommend", json={"user_id": "1", "k": 3}, headers={"X-Recsys-Arm": "other"}).json()
    assert answer["experiment"]["arm"] == "other" and answer["experiment"]["forced"] is True
    response = http.post("/recommend", json={"user_id": "1"}, headers={"X-Recsys-Arm": "nope"})
    assert response.status_code == 400
    body = response.json()
    assert body["detail"][0]["loc"] == ["headers", "x-recsys-arm"]
    assert "'nope' is not an arm of exp (control, other)" in body["message"]
    batch = {"requests": [{"user_id": "1"}, {"user_id": "2"}]}
    forced = http.post("/recommend_batch", json=batch, headers={"X-Recsys-Arm": "control"}).json()
    assert [r["experiment"]["arm"] for r in forced["results"]] == ["control", "control"]
    response = http.post("/recommend", json={"user_id": "1", "arm": "other"})  # not a body field
    assert response.status_code == 400 and response.json()["detail"][0]["type"] == "extra_forbidden"


def test_a_broken_file_keeps_the_experiment_and_a_new_one_takes_over_within_a_refresh(experiment_server):
    http, spec, _, run = experiment_server
    write(spec, "{not json")
    info = until(lambda: (i := http.post("/model_info").json()["experiment"])["error"] and i)
    assert info["name"] == "exp" and "not JSON" in info["error"]
    assert http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "exp"
    write(spec, arms_spec(run.ranker_tag, name="exp2"))
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "exp2")
    assert http.post("/model_info").json()["experiment"]["error"] is None
    write(spec, arms_spec(run.ranker_tag))  # as the module started, for the next test


def test_an_interleaving_arm_says_which_model_placed_each_item(experiment_server):
    http, spec, _, run = experiment_server
    arms = [{"name": "control", "weight": 0}, {"name": "both", "weight": 1, "interleave": [None, run.ranker_tag]}]
    write(spec, {"name": "il", "arms": arms})
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "il")
    mixed = http.post("/recommend", json={"user_id": "5", "k": 6}).json()
    plain = http.post("/recommend", json={"user_id": "5", "k": 6}, headers={"X-Recsys-Arm": "control"}).json()
    assert mixed["experiment"]["arm"] == "both" and plain["experiment"]["forced"]
    assert {item["team"] for item in mixed["recommendations"]} == {"a", "b"}
    assert "team" not in plain["recommendations"][0]
    # Both teams are the same model here: team draft gives back its ranking.
    assert [i["item_id"] for i in mixed["recommendations"]] == [i["item_id"] for i in plain["recommendations"]]
    write(spec, arms_spec(run.ranker_tag))
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "exp")


def test_impressions_carry_their_arm_and_feedback_joins_them_in_the_report(experiment_server):
    """The loop closed: lists served by arm, every "control" user takes its top item, the report says so."""
    http, _, events, _ = experiment_server
    answers = [http.post("/recommend", json={"user_id": u, "k": 3}).json() for u in USERS[:40]]
    for answer in answers:
        if answer["experiment"]["arm"] == "control":
            event = {"user_id": answer["user_id"], "item_id": answer["recommendations"][0]["item_id"],
                     "request_id": answer["request_id"]}  # fmt: skip
            assert http.post("/feedback", json=event).status_code == 200

    served = {a["request_id"] for a in answers}

    def all_logged() -> bool:
        shown = read_events(str(events), IMPRESSIONS).to_pandas()
        taken = read_events(str(events), FEEDBACK).to_pandas()
        return served <= set(shown["request_id"]) and set(taken["request_id"]) >= {
            a["request_id"] for a in answers if a["experiment"]["arm"] == "control"
        }

    assert until(all_logged)
    logged = read_events(str(events), IMPRESSIONS).to_pandas()
    logged = logged[logged["request_id"].isin(served)]
    is_shadow = logged["shadow"].fillna(False).astype(bool)
    shown = logged[~is_shadow]
    assert set(shown["arm"]) == {"control", "other"} and set(shown["experiment"]) == {"exp"}
    until(
        lambda: served <= set(read_events(str(events), IMPRESSIONS).to_pandas().query("shadow == True")["request_id"])
    )
    logged = read_events(str(events), IMPRESSIONS).to_pandas()
    logged = logged[logged["request_id"].isin(served)]
    assert set(logged[logged["shadow"].fillna(False).astype(bool)]["arm"]) == {"shade"}
    taken = read_events(str(events), FEEDBACK).to_pandas()
    (compared,) = shadow_report(logged, taken).to_dict(orient="records")
    assert compared["lists"] == 40 and compared["shown_hit_rate"] == pytest.approx(
        sum(a["experiment"]["arm"] == "control" for a in answers) / 40
    )
    arms, checks = experiment_report(logged, taken)
    by_arm = arms.set_index("arm")
    assert by_arm.loc["control", "hit_rate"] == 1.0 and by_arm.loc["other", "hit_rate"] == 0.0
    assert by_arm["users"].sum() == 40 and checks["users"].tolist() == [40]


def test_an_experiments_file_that_cannot_be_served_stops_the_start(movielens_run, tmp_path):
    spec = tmp_path / "experiments.json"
    write(spec, arms_spec("recsys-ranker:nope"))
    code, output = run_until_exit(
        "service:Recommender", {"RECSYS_RANKER_TAG": movielens_run[0].ranker_tag, "RECSYS_EXPERIMENTS": str(spec)}
    )
    assert code != 0 and "experiments file: arm 'other': ranker recsys-ranker:nope cannot be served" in output
