"""Online experiments: the file, the assignment, a changed or broken file, and two real model pairs answering."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from features.events import IMPRESSIONS, read_events
from serving.api_models import RecommendRequest, RecommendResponse
from serving.experiment_spec import ExperimentError, experiments_path, read_spec
from serving.experiments import Experiment, Experiments, Shadow, bucket
from serving.interleaving import team_draft
from serving.runtime import Runtime
from serving.shadow_process import ShadowProcess
from serving.shadow_scoring import ShadowScorer
from tests.support import quick_config
from train.run import train


def write(path: Path, spec: dict | str) -> Path:
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a rewrite within the clock's tick
    return path


TWO_ARMS = {"name": "exp", "arms": [{"name": "control", "weight": 1}, {"name": "more", "weight": 3}]}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("{", "is not JSON"),
        ({"name": "exp", "arms": [{"name": "only", "weight": 1}]}, "arms: List should have at least 2 items"),
        ({"name": "exp", "arms": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}, "arm names must differ"),
        ({"name": "exp", "arms": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}, "a weight above 0"),
        ({"name": "exp", "arms": [{"name": "a", "weight": -1}, {"name": "b", "weight": 1}]}, "arms.0.weight"),
        ({"name": "exp", "arms": [{"name": "a b", "weight": 1}, {"name": "b", "weight": 1}]}, "arms.0.name"),
        (
            {"name": "exp", "arms": [{"name": "a", "weight": 1, "model": "x"}, {"name": "b", "weight": 1}]},
            "arms.0.model",
        ),
        ({"arms": []}, "name: Field required"),
        (
            {
                "name": "exp",
                "arms": [
                    {"name": "a", "weight": 1, "ranker": "r:1", "interleave": [None, "r:1"]},
                    {"name": "b", "weight": 1},
                ],
            },
            "an arm has one of ranker, interleave and strategy",
        ),
        (
            {"name": "exp", "arms": [{"name": "a", "weight": 1, "interleave": ["r:1"]}, {"name": "b", "weight": 1}]},
            "arms.0.interleave",
        ),
    ],
)
def test_a_file_that_cannot_be_served_says_what_to_fix(tmp_path, spec, says):
    with pytest.raises(ExperimentError, match=r"experiments\.json") as error:
        read_spec(write(tmp_path / "experiments.json", spec))
    assert says in str(error.value)


def test_no_file_is_no_experiment_and_the_default_file_sits_at_a_local_feature_store(tmp_path):
    assert read_spec(tmp_path / "experiments.json") is None
    assert experiments_path(None, str(tmp_path)) == tmp_path / "experiments.json"
    assert experiments_path("/etc/exp.json", str(tmp_path)) == Path("/etc/exp.json")
    assert experiments_path(None, "s3://bucket/features") is None


def test_buckets_are_fixed_by_salt_and_user_and_spread_evenly():
    points = [bucket("salt", str(user)) for user in range(20_000)]
    assert points == [bucket("salt", str(user)) for user in range(20_000)]
    assert all(0 <= p < 1 for p in points)
    deciles = Counter(int(p * 10) for p in points)
    assert all(1_850 <= deciles[d] <= 2_150 for d in range(10))  # 2,000 each; 3.5 standard deviations
    other = [bucket("other salt", str(user)) for user in range(20_000)]
    assert sum((a < 0.5) == (b < 0.5) for a, b in zip(points, other, strict=True)) == pytest.approx(10_000, abs=350)


@pytest.fixture(scope="module")
def served(small_run) -> Runtime:
    run, _ = small_run
    return Runtime.from_store(run.ranker_tag)


@pytest.fixture(scope="module")
def second_ranker(small_run, synthetic_files, tmp_path_factory) -> str:
    """Another model pair on the same data (another seed, fewer trees): what a team would test against the first."""
    files = synthetic_files["parquet"]
    tmp = tmp_path_factory.mktemp("second-pair")
    config = quick_config(tmp, interactions=files["interactions"], users=files["users"], items=files["items"], seed=7,
                          ranker_iterations=30)  # fmt: skip
    return train(config, echo=False).ranker_tag


def test_users_split_by_weight_the_same_way_every_time_and_forced_arms_are_served(served, tmp_path):
    experiments = Experiments(write(tmp_path / "e.json", TWO_ARMS), served, load=pytest.fail)
    users = [str(u) for u in served.candidates.user_ids]
    first = experiments.respond([RecommendRequest(user_id=u, k=3) for u in users])
    again = experiments.respond([RecommendRequest(user_id=u, k=3) for u in reversed(users)])
    arms = {r.user_id: r.experiment.arm for r in first}
    assert arms == {r.user_id: r.experiment.arm for r in again}
    assert Counter(arms.values())["more"] / len(users) == pytest.approx(0.75, abs=0.06)  # 300 users
    assert {r.experiment.share for r in first if r.experiment.arm == "more"} == {0.75}
    request = RecommendRequest(user_id=users[0], k=3)
    experiments.force([request], ["more"], batch=False)
    (forced,) = experiments.respond([request])
    assert forced.experiment.arm == "more" and forced.experiment.forced
    assert not any(r.experiment.forced for r in first)


def test_a_visitor_without_an_account_is_assigned_by_session(served, tmp_path):
    """Anonymous visitors share a user_id; each session gets its own arm, kept for the visit, and the answer says so."""
    experiments = Experiments(write(tmp_path / "e.json", TWO_ARMS), served, load=pytest.fail)
    sessions = [f"s{n}" for n in range(200)]
    first = experiments.respond([RecommendRequest(user_id="guest", session_id=s, k=3) for s in sessions])
    again = experiments.respond([RecommendRequest(user_id="guest", session_id=s, k=3) for s in sessions])
    arms = [r.experiment.arm for r in first]
    assert arms == [r.experiment.arm for r in again] and set(arms) == {"control", "more"}
    assert [r.experiment.session_id for r in first] == sessions
    expected = [experiments.current.arm_for(s).name for s in sessions]
    assert arms == expected
    (signed_in,) = experiments.respond([RecommendRequest(user_id="guest", k=3)])
    assert signed_in.experiment.arm == experiments.current.arm_for("guest").name
    assert "session_id" not in signed_in.model_dump(mode="json")["experiment"]


def test_a_forced_arm_that_is_not_there_is_a_400_at_its_header(served, tmp_path):
    none = Experiments(tmp_path / "absent.json", served, load=pytest.fail)
    with pytest.raises(ValidationError, match="no experiment is running") as error:
        none.force([RecommendRequest(user_id="1")], ["more"], batch=False)
    assert error.value.errors()[0]["loc"] == ("headers", "x-recsys-arm")
    running = Experiments(write(tmp_path / "e.json", TWO_ARMS), served, load=pytest.fail)
    requests = [RecommendRequest(user_id="1"), RecommendRequest(user_id="2")]
    with pytest.raises(ValidationError, match="'less' is not an arm of exp") as error:
        running.force(requests, ["less"], batch=True)
    assert error.value.errors()[0]["loc"] == ("headers", "x-recsys-arm")
    assert [r.forced_arm for r in requests] == [None, None]  # nothing marked when refused
    running.force(requests, ["control"], batch=True)
    assert [r.forced_arm for r in requests] == ["control", "control"]
    running.force(requests[:1], [], batch=False)  # no header: nothing changes
    running.force(requests[:1], ["control", "control"], batch=False)  # the same arm twice is one arm
    fresh = [RecommendRequest(user_id="3")]
    with pytest.raises(ValidationError, match="one arm per request: the x-recsys-arm headers name 'control', 'more'"):
        running.force(fresh, ["control", "more"], batch=False)  # the first one had won, silently
    assert fresh[0].forced_arm is None
    assert "arm" not in RecommendRequest.model_json_schema()["properties"]  # not a body field


def test_a_broken_file_keeps_the_experiment_a_changed_one_replaces_it_and_no_file_ends_it(served, tmp_path):
    path = write(tmp_path / "e.json", TWO_ARMS)
    experiments = Experiments(path, served, load=pytest.fail)
    assert experiments.reload() is False  # unchanged: not read again
    write(path, "{")
    assert experiments.reload() is False
    assert experiments.current.name == "exp" and "not JSON" in experiments.error
    assert experiments.info().error == experiments.error and experiments.info().name == "exp"
    write(path, {**TWO_ARMS, "name": "exp2"})
    assert experiments.reload() is True
    assert experiments.current.name == "exp2" and experiments.error is None
    path.unlink()
    assert experiments.reload() is True
    assert experiments.current is None and experiments.info() is None
    (answer,) = experiments.respond([RecommendRequest(user_id="1", k=3)])
    assert answer.experiment is None


def test_an_edit_that_keeps_the_size_and_the_clock_is_seen(served, tmp_path):
    """A filesystem with a coarse clock, or a tool that keeps times: the content decides, not the time alone."""
    path = tmp_path / "e.json"
    path.write_text(json.dumps(TWO_ARMS))
    before = path.stat()
    experiments = Experiments(path, served, load=pytest.fail)
    path.write_text(json.dumps({**TWO_ARMS, "arms": [{"name": "control", "weight": 3}, {"name": "more", "weight": 1}]}))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert experiments.reload() is True
    assert [arm.share for arm in experiments.current.arms] == [0.75, 0.25]
    assert experiments.reload() is False


@pytest.mark.slow
def test_each_arm_is_answered_by_its_own_model_pair_loaded_once(served, second_ranker, tmp_path):
    loads: list[str] = []

    def load(tag: str) -> Runtime:
        loads.append(tag)
        return Runtime.from_store(tag)

    spec = {
        "name": "pairs",
        "arms": [{"name": "control", "weight": 1}, {"name": "new", "weight": 1, "ranker": second_ranker}],
    }
    path = write(tmp_path / "e.json", spec)
    experiments = Experiments(path, served, load)
    answers = experiments.respond([RecommendRequest(user_id=str(u), k=5) for u in served.candidates.user_ids])
    arms = {r.experiment.arm for r in answers}
    by_arm = {arm: {r.model.ranker for r in answers if r.experiment.arm == arm} for arm in arms}
    assert by_arm == {"control": {str(served.tags.ranker)}, "new": {second_ranker}}
    spec_il = {"name": "il", "arms": [{"name": "control", "weight": 0}, {"name": "both", "weight": 1,
               "interleave": [None, second_ranker]}]}  # fmt: skip
    write(path, spec_il)
    assert experiments.reload() is True
    interleaved = experiments.respond([RecommendRequest(user_id=str(u), k=6) for u in served.candidates.user_ids])
    teams = Counter(item.team for answer in interleaved for item in answer.recommendations)
    assert teams["a"] > 0 and teams["b"] > 0 and set(teams) == {"a", "b"}
    for answer in interleaved[:20]:
        assert [i.rank for i in answer.recommendations] == list(range(1, len(answer.recommendations) + 1))
    assert experiments.info().arms[1].interleaved_with.ranker == second_ranker
    write(path, spec)
    assert experiments.reload() is True
    assert experiments.info().arms[1].model.ranker == second_ranker
    write(path, {**spec, "arms": [*spec["arms"], {"name": "third", "weight": 1, "ranker": second_ranker}]})
    assert experiments.reload() is True
    assert loads == [second_ranker]  # the second file's arms reuse what the first loaded
    write(path, {**spec, "arms": [spec["arms"][0], {"name": "gone", "weight": 1, "ranker": "recsys-ranker:nope"}]})
    assert experiments.reload() is False
    assert "arm 'gone': ranker recsys-ranker:nope cannot be served" in experiments.error
    assert [arm.name for arm in experiments.current.arms] == ["control", "new", "third"]


def test_team_draft_keeps_each_models_order_and_balances_the_teams():
    merged = team_draft(list("abcdef"), list("bxcyz"), 6, random.Random("r1"))
    assert merged == [("b", "b"), ("a", "a"), ("c", "a"), ("x", "b"), ("y", "b"), ("d", "a")]  # coins: b, then a, b
    for seed in range(200):
        first, second = list("abcdefghij"), list("cbaxyzwvut")
        merged = team_draft(first, second, 10, random.Random(seed))
        items = [item for item, _ in merged]
        assert len(items) == len(set(items)) == 10
        for team, ranking in (("a", first), ("b", second)):
            own = [item for item, t in merged if t == team]
            assert own == sorted(own, key=ranking.index)  # each team's items in its own model's order
        picks = Counter(team for _, team in merged)
        assert abs(picks["a"] - picks["b"]) <= 1
    firsts = Counter(team_draft(list("ab"), list("xy"), 2, random.Random(seed))[0][1] for seed in range(2000))
    assert firsts["a"] == pytest.approx(1000, abs=150)  # the coin is fair
    assert team_draft(list("ab"), list("xyz"), 5, random.Random(0))[-1] == ("z", "b")  # a ran out: b goes on


def test_a_popular_arm_gives_its_users_the_popularity_baseline(served, tmp_path):
    spec = {"name": "vs-popular", "arms": [{"name": "control", "weight": 1}, {"name": "pop", "weight": 1,
            "strategy": "popular"}]}  # fmt: skip
    experiments = Experiments(write(tmp_path / "e.json", spec), served, load=pytest.fail)
    answers = experiments.respond([RecommendRequest(user_id=str(u), k=5) for u in served.candidates.user_ids[:80]])
    by_arm = {arm: [a for a in answers if a.experiment.arm == arm] for arm in ("control", "pop")}
    assert by_arm["control"] and by_arm["pop"]
    assert {a.strategy for a in by_arm["pop"]} == {"popular"} and {a.strategy for a in by_arm["control"]} == {
        "two_stage"
    }
    assert all(a.message.startswith("popularity baseline of an experiment") for a in by_arm["pop"])
    for answer in by_arm["pop"]:  # nothing the user has taken
        taken = set(
            served.candidates.item_ids[served.candidates.seen_items(served.candidates.user_index[answer.user_id])]
        )
        assert not taken & {item.item_id for item in answer.recommendations}
    assert experiments.info().arms[1].strategy == "popular"


def test_a_shadow_scores_sampled_requests_off_the_request_path_under_their_request_ids(served, tmp_path):
    recorded: list = []
    done = threading.Event()

    def record(answers: list) -> None:
        recorded.extend(answers)
        done.set()

    spec = {**TWO_ARMS, "shadow": {"name": "pop", "strategy": "popular", "share": 1.0}}
    experiments = Experiments(write(tmp_path / "e.json", spec), served, load=pytest.fail, shadows=ShadowScorer(record))
    shown = experiments.respond([RecommendRequest(user_id=str(u), k=4) for u in served.candidates.user_ids[:30]])
    assert done.wait(30)
    experiments.stop()  # scores what is queued first
    assert {a.request_id for a in recorded} == {a.request_id for a in shown}
    assert all(a.experiment.shadow and a.experiment.arm == "pop" and a.strategy == "popular" for a in recorded)
    assert not any(a.experiment.shadow for a in shown)
    assert "shadow" not in shown[0].experiment.model_dump()  # a shown answer does not mention shadows


def test_a_shadow_that_cannot_keep_up_is_dropped_and_counted(served, tmp_path):
    release = threading.Event()
    scorer = ShadowScorer(lambda answers: release.wait(30), capacity=1)
    spec = {**TWO_ARMS, "shadow": {"name": "pop", "strategy": "popular", "share": 1.0}}
    experiment = Experiments(write(tmp_path / "e.json", spec), served, load=pytest.fail).current
    request = [RecommendRequest(user_id="1", k=2)]
    shown = Experiments(None, served, load=pytest.fail).respond(request)
    for _ in range(5):  # one in the scorer, one queued, the rest dropped
        scorer.offer(experiment, request, shown)
    assert scorer.dropped >= 3
    release.set()
    scorer.close()


def test_a_shadow_scores_what_arrives_together_in_one_pipeline_call(served, tmp_path):
    """Nobody waits for a shadow: requests offered within its gathering window share one call, in their order."""
    calls: list[list[str]] = []
    scorer = ShadowScorer(lambda answers: calls.append([a.request_id for a in answers]), gather_seconds=0.5, batch=4)
    spec = {**TWO_ARMS, "shadow": {"name": "pop", "strategy": "popular", "share": 1.0}}
    experiment = Experiments(write(tmp_path / "e.json", spec), served, load=pytest.fail).current
    plain = Experiments(None, served, load=pytest.fail)
    offered = []
    for user in ["1", "2", "3", "4", "5", "6"]:  # six requests, one at a time: at most four a call
        request = [RecommendRequest(user_id=user, k=2)]
        shown = plain.respond(request)
        offered.append(shown[0].request_id)
        scorer.offer(experiment, request, shown)
    scorer.close()
    assert calls == [offered[:4], offered[4:]]


def test_a_shadow_process_scores_and_logs_what_it_is_given_and_flushes_when_closed(served, tmp_path, monkeypatch):
    """The service's shadow: a child process of its own, which logs the lists under the shown request_ids."""
    monkeypatch.setenv("RECSYS_EVENT_LOG", str(tmp_path / "events"))  # the child reads the worker's settings
    spec = {**TWO_ARMS, "shadow": {"name": "pop", "strategy": "popular", "share": 1.0}}
    experiment = Experiments(write(tmp_path / "e.json", spec), served, load=pytest.fail).current
    requests = [RecommendRequest(user_id=str(u), k=3) for u in served.candidates.user_ids[:10]]
    shown = Experiments(None, served, load=pytest.fail).respond(requests)
    shadows = ShadowProcess()
    shadows.offer(experiment, requests[:4], shown[:4])
    shadows.offer(experiment, requests[4:], shown[4:])
    shadows.close(timeout=120)
    logged = read_events(str(tmp_path / "events"), IMPRESSIONS).to_pandas()
    assert set(logged["request_id"]) == {answer.request_id for answer in shown}
    assert logged["shadow"].all() and set(logged["arm"]) == {"pop"} and set(logged["strategy"]) == {"popular"}
    assert shadows.started == 1 and shadows.dropped == 0


def test_a_shadow_process_that_dies_costs_its_requests_and_is_not_restarted_at_once():
    """A child that exits is not started again for every request: its requests are dropped and counted."""
    shadows = ShadowProcess(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    runtime = SimpleNamespace(tags=SimpleNamespace(ranker="recsys-ranker:any"))  # the message names its ranker
    spec = Experiment("exp", "exp", (), Shadow("pop", 1.0, runtime, popular=True))  # type: ignore[arg-type]
    for n in range(6):
        shadows.offer(spec, [RecommendRequest(user_id=str(n))], [RecommendResponse(user_id=str(n), recommendations=[])])
        time.sleep(0.3)
    shadows.close(timeout=5)
    assert shadows.started == 1 and shadows.dropped >= 4
