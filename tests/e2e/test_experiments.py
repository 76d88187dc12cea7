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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from features.events import FEEDBACK, IMPRESSIONS, read_events
from tests.support import FIGURES, Load, run_until_exit, serve, worker_pids
from train.experiments import experiment_report, shadow_report

pytestmark = pytest.mark.slow
USERS = [str(u) for u in range(1, 101)]  # one batch holds at most 100


def write(path: Path, spec: dict | str) -> None:
    """Replace the file whole, as docs/experiments.md says to; the server sees new content whatever the clock."""
    partial = path.with_suffix(".partial")
    partial.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    os.replace(partial, path)


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
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "exp")


def test_changing_weights_under_load_fails_no_request(experiment_server):
    """A file swapped under traffic takes over between requests: none of them fails while it does."""
    http, spec, _, run = experiment_server

    def arms() -> dict[str, str | None]:
        """Each user's arm in the experiment "exp" ("exp:control"); None outside an experiment."""
        batch = http.post("/recommend_batch", json={"requests": [{"user_id": u, "k": 3} for u in USERS]}).json()
        said = {r["user_id"]: r.get("experiment") for r in batch["results"]}
        return {u: f"{e['name']}:{e['arm']}" if e else None for u, e in said.items()}

    # The module's file served, whatever test ran before.
    assert until(lambda: set(arms().values()) == {"exp:control", "exp:other"})
    before = arms()
    everyone_other = arms_spec(run.ranker_tag)
    everyone_other["arms"][0]["weight"] = 0
    try:
        with Load(str(http.base_url), users=USERS) as load:
            write(spec, everyone_other)
            assert until(lambda: set(arms().values()) == {"exp:other"})
            spec.unlink()  # no file: no experiment, answers without the key
            assert until(lambda: set(arms().values()) == {None})
            write(spec, arms_spec(run.ranker_tag))  # as the module started, for the tests after this one
            assert until(lambda: arms() == before)  # the same weights and salt: every user back in their arm
    except BaseException:
        write(spec, arms_spec(run.ranker_tag))  # a failure here must not leave the other tests without the file
        raise
    FIGURES.append(f"experiments file changed three times under load: {dict(load.outcomes)}")
    assert set(load.outcomes) == {"200"} and load.outcomes["200"] > 0, dict(load.outcomes)


def test_a_visitor_is_assigned_by_session_and_the_log_keeps_it(experiment_server):
    """Visitors sharing one user_id get arms by session, kept over a visit, echoed, and logged for the report."""
    http, _, events, _ = experiment_server
    sessions = [f"visit-{n}" for n in range(40)]

    def arms() -> dict[str, str]:
        batch = {"requests": [{"user_id": "guest", "session_id": s, "k": 3} for s in sessions]}
        answers = http.post("/recommend_batch", json=batch).json()["results"]
        assert [a["experiment"]["session_id"] for a in answers] == sessions
        return {s: a["experiment"]["arm"] for s, a in zip(sessions, answers, strict=True)}

    first = arms()
    assert first == arms() and set(first.values()) == {"control", "other"}
    assert "session_id" not in http.post("/recommend", json={"user_id": "1"}).json()["experiment"]

    def logged() -> bool:
        shown = read_events(str(events), IMPRESSIONS).to_pandas()
        return set(sessions) <= set(shown["session_id"].dropna())

    assert until(logged)


def test_a_shadow_never_changes_the_answer_shown(experiment_server):
    """The same users answered with the shadow scoring every request, then without it: the same lists."""
    http, spec, _, run = experiment_server
    batch = {"requests": [{"user_id": u, "k": 5} for u in USERS]}

    def lists() -> dict[str, list[str]]:
        answers = http.post("/recommend_batch", json=batch).json()["results"]
        return {a["user_id"]: [(i["item_id"], i["score"]) for i in a["recommendations"]] for a in answers}

    with_shadow = lists()
    plain = {k: v for k, v in arms_spec(run.ranker_tag, name="plain").items() if k != "shadow"}
    write(spec, {**plain, "salt": "exp"})  # the users keep their arms
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "plain")
    assert lists() == with_shadow
    write(spec, arms_spec(run.ranker_tag))
    assert until(lambda: http.post("/recommend", json={"user_id": "1"}).json()["experiment"]["name"] == "exp")


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
    until(  # the shadow's own process may still be starting
        lambda: served <= set(read_events(str(events), IMPRESSIONS).to_pandas().query("shadow == True")["request_id"]),
        seconds=90,
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


def answered_by(events: Path) -> dict[str, int]:
    """Which worker logged each request's impressions: a worker writes its own files, named by its pid first."""
    found = {}
    for path in (events / IMPRESSIONS).glob("date=*/[!_]*.parquet"):
        pid = int(path.name.split("-")[0])
        found.update(dict.fromkeys(pq.read_table(path, columns=["request_id"])["request_id"].to_pylist(), pid))
    return found


def test_a_user_keeps_the_arm_across_two_workers_and_a_restart(movielens_run, tmp_path):
    """Nothing is shared between workers or kept across a restart: the hash alone must give each user one arm."""
    run, _ = movielens_run
    spec, events = tmp_path / "experiments.json", tmp_path / "events"
    write(spec, {k: v for k, v in arms_spec(run.ranker_tag, name="sticky").items() if k != "shadow"})
    env = {
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_EXPERIMENTS": str(spec),
        "RECSYS_WORKERS": "2",
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": str(events),
        "RECSYS_EVENT_FLUSH_SECONDS": "0.5",
    }

    def ask(url: str, users: list[str]) -> list[dict]:
        """Each user asked on a connection of its own, four at a time, so that either worker may take it."""

        def one(user: str) -> dict:
            body = {"user_id": user, "k": 3}
            response = httpx.post(f"{url}/recommend", json=body, headers={"Connection": "close"}, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, users))

    with serve("service:Recommender", env) as live:
        workers = set(worker_pids(live.process.pid))
        answers = ask(live.url, USERS * 4)
        served = {a["request_id"]: a for a in answers}
        assert until(lambda: set(answered_by(events)) >= set(served))
        assert set(worker_pids(live.process.pid)) == workers  # the same two all along: no worker restarted
    by = answered_by(events)
    assert len(workers) == 2 and {by[r] for r in served} == workers  # both workers answered
    seen: dict[str, set[str]] = {}
    pids: dict[str, set[int]] = {}
    for request_id, answer in served.items():
        seen.setdefault(answer["user_id"], set()).add(answer["experiment"]["arm"])
        pids.setdefault(answer["user_id"], set()).add(by[request_id])
    assert all(len(arms) == 1 for arms in seen.values()), {u: a for u, a in seen.items() if len(a) > 1}
    both = sum(len(p) == 2 for p in pids.values())
    split = sorted(Counter(by[r] for r in served).values())
    FIGURES.append(f"one arm per user over two workers: requests per worker {split}, users answered by both {both}")
    assert both >= 10  # and many users were answered by both
    arms = {user: arms.pop() for user, arms in seen.items()}
    assert 28 <= Counter(arms.values())["control"] <= 72  # both arms have users: keeping one is not trivial

    with serve("service:Recommender", env) as again:
        assert {a["user_id"]: a["experiment"]["arm"] for a in ask(again.url, USERS)} == arms
