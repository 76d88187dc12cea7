"""The split topology's stages in-process: the answers of one process, and a refusal on a mismatched model."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict

import aiohttp
import bentoml
import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable

from serving.api_models import RecommendRequest
from serving.batcher import MicroBatcher, Overloaded
from serving.runtime import IncompatibleModels, Runtime
from serving.split import (
    CandidateStage,
    RankerStage,
    batch_from_json,
    batch_to_json,
    join_found,
    out_of_step,
    queued,
    requests_json,
    split_found,
)
from serving.split_client import KEEPALIVE_SECONDS, UNREACHABLE_RETRY_AFTER, SessionManager, call
from stages.candidates import CandidateModel, CandidateParams
from stages.pipeline import Query, RecentEvent
from tests.unit.stages.test_candidates import checkerboard


@pytest.fixture(scope="module")
def stages(small_run) -> tuple[Runtime, CandidateStage, RankerStage]:
    run, _ = small_run
    runtime = Runtime.from_store(run.ranker_tag)
    candidates = CandidateStage.from_model(bentoml.models.get(runtime.tags.candidates))
    return runtime, candidates, RankerStage(runtime)


def split_answers(candidates: CandidateStage, ranker: RankerStage, requests: list[dict]) -> list[dict]:
    """What the entry does, with JSON in between as over HTTP."""
    body = json.loads(json.dumps(requests_json([RecommendRequest.model_validate(r) for r in requests])))
    n = ranker.plan()["n_candidates"]
    found = json.loads(json.dumps(candidates.candidates_for(body, n)))
    return json.loads(json.dumps(ranker.rank(body, found)))


def test_split_stages_answer_as_the_single_process_pipeline(stages):
    runtime, candidates, ranker = stages
    users = [str(u) for u in runtime.candidates.user_ids[:6]]
    items = [str(i) for i in runtime.candidates.item_ids[:4]]
    requests = [
        {"user_id": users[0], "k": 10},
        {"user_id": "stranger", "k": 5},
        {"user_id": users[1], "k": 7, "exclude_items": items[:2], "exclude_seen": False},
        {"user_id": "visitor", "k": 10, "recent_items": [items[0], {"item_id": items[1], "weight": 3}, "nope"]},
        {"user_id": users[2], "k": 10, "recent_items": [{"item_id": items[3], "timestamp": 0}]},
        *({"user_id": u, "k": 3} for u in users[3:]),
    ]
    queries = [
        Query(users[0], 10),
        Query("stranger", 5),
        Query(users[1], 7, False, items[:2]),
        Query(
            "visitor", 10, recent_items=[RecentEvent(items[0]), RecentEvent(items[1], None, 3.0), RecentEvent("nope")]
        ),
        Query(users[2], 10, recent_items=[RecentEvent(items[3], 0)]),
        *(Query(u, 3) for u in users[3:]),
    ]
    expected = [asdict(r) for r in runtime.pipeline.recommend(queries)]
    got = split_answers(candidates, ranker, requests)
    assert got == json.loads(json.dumps(expected))
    assert [a["strategy"] for a in got][:4] == ["two_stage", "popular", "two_stage", "two_stage"]
    # One at a time too (what /recommend sends).
    assert [split_answers(candidates, ranker, [r])[0] for r in requests] == got


def test_calls_answered_together_get_the_answers_they_get_alone(stages):
    """What the stage services' micro-batchers do: rows of several calls in one pipeline call, split back."""
    runtime, candidates, ranker = stages
    users = [str(u) for u in runtime.candidates.user_ids[:5]]
    item = str(runtime.candidates.item_ids[0])
    calls = [
        [{"user_id": users[0], "k": 10}, {"user_id": "stranger", "k": 5}],
        [{"user_id": "visitor", "k": 4, "recent_items": [item]}],
        [{"user_id": u, "k": 3} for u in users[1:]],
    ]
    n = ranker.plan()["n_candidates"]
    alone = [split_answers(candidates, ranker, c) for c in calls]
    bodies = [requests_json([RecommendRequest.model_validate(r) for r in c]) for c in calls]
    asks = [(request, n) for body in bodies for request in body]
    rows = candidates.candidate_rows(asks)
    assert {(model, features) for _, model, features in rows} == {(candidates.tag, candidates.view.version)}
    # Through the wire format and back, per call, as the candidates service answers each call.
    start, found = 0, []
    for body in bodies:
        part = rows[start : start + len(body)]
        found.append(json.loads(json.dumps(join_found([r for r, _, _ in part], candidates.tag, "v"))))
        start += len(body)
    assert [f["rankable"] for f in found] == [[True, False], [True], [True] * 4]
    parts = [pair for body, f in zip(bodies, found, strict=True) for pair in zip(body, split_found(f), strict=True)]
    together = json.loads(json.dumps(ranker.rank_rows(parts)))
    assert together == [answer for answers in alone for answer in answers]


def test_split_found_and_join_found_are_inverse(stages):
    runtime, candidates, _ = stages
    body = requests_json(
        [RecommendRequest(user_id=u) for u in ("stranger", str(runtime.candidates.user_ids[0]), "nobody")]
    )
    found = json.loads(json.dumps(candidates.candidates_for(body, 10)))
    assert join_found(split_found(found), found["model"], found["features"]) == found
    empty = join_found([], "m", "f")
    assert empty["rankable"] == [] and set(empty["batch"]) == set(found["batch"]) and not any(empty["batch"].values())


def test_a_stage_sheds_with_503_and_the_entry_turns_it_into_overloaded():
    gate = threading.Event()

    def held(xs: list) -> list:
        gate.wait(5)
        return xs

    async def scenario():
        batcher = MicroBatcher(held, max_batch=4, max_pending=1)
        running = asyncio.create_task(queued(batcher, [0]))
        await asyncio.sleep(0.05)  # in a call, held open
        waiting = asyncio.create_task(queued(batcher, [1]))  # the one query that may wait
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailable):
            await queued(batcher, [2, 3])  # no room: refused at once
        gate.set()
        assert (await running, await waiting) == ([0], [1])
        assert await queued(batcher, [4, 5]) == [4, 5]  # larger than the queue, taken while it is empty
        batcher.close()

    asyncio.run(scenario())

    async def shed(**kwargs):
        raise ServiceUnavailable("overloaded: 9 queries already waiting in this worker")

    with pytest.raises(Overloaded, match="a stage service shed the call: overloaded: 9 queries already waiting"):
        asyncio.run(call(shed))


def test_stages_out_of_step_answer_503_so_the_entry_says_retry_not_500():
    """A rolling update or a refresh that reached one stage first: 503 (Retry-After at the entry), not 500."""

    def disagree(parts):
        raise IncompatibleModels("the candidates service and the ranker disagree on which users have a history")

    async def scenario():
        batcher = MicroBatcher(disagree, max_batch=4, max_pending=8)
        try:
            with pytest.raises(ServiceUnavailable, match="models out of step: the candidates service and the ranker"):
                await queued(batcher, [1])
        finally:
            batcher.close()

    asyncio.run(scenario())
    error = out_of_step(IncompatibleModels("ranker r was trained against candidates model a"))
    assert isinstance(error, ServiceUnavailable)
    assert error.message == "models out of step: ranker r was trained against candidates model a"


def test_the_ranker_refuses_candidates_from_another_model(stages):
    runtime, candidates, ranker = stages
    body = requests_json([RecommendRequest(user_id=str(runtime.candidates.user_ids[0]))])
    found = {**candidates.candidates_for(body, 10), "model": "recsys-candidates:other"}
    with pytest.raises(IncompatibleModels, match="candidates service serves recsys-candidates:other"):
        ranker.rank(body, found)
    with pytest.raises(IncompatibleModels, match="candidates service serves recsys-candidates:other"):
        ranker.check_model(found)  # what the ranker service checks before a call joins its queue


class _Dropping:
    """An endpoint whose connection drops ``fails`` times before it answers."""

    def __init__(self, fails: int, exc: Exception) -> None:
        self.fails, self.exc, self.calls = fails, exc, 0

    async def __call__(self, **kwargs):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.exc
        return kwargs


def test_a_dropped_connection_is_retried_and_a_timeout_is_not():
    """Retries absorb a dropped connection; a stage that stays down, or is slow, is a 503 with Retry-After."""
    dropped = _Dropping(2, aiohttp.ServerDisconnectedError())
    assert asyncio.run(call(dropped, x=1)) == {"x": 1} and dropped.calls == 3
    always = _Dropping(5, aiohttp.ServerDisconnectedError())
    with pytest.raises(Overloaded, match="a stage service cannot be reached") as down:
        asyncio.run(call(always))
    assert always.calls == 3 and down.value.retry_after == UNREACHABLE_RETRY_AFTER
    slow = _Dropping(1, aiohttp.ServerTimeoutError())
    with pytest.raises(Overloaded, match="a stage service cannot be reached"):
        asyncio.run(call(slow))
    assert slow.calls == 1


def test_a_recycled_session_is_not_closed_under_calls_in_flight():
    from _bentoml_impl.client import proxy2

    async def scenario():
        manager = SessionManager(proxy2.SessionManager("tcp://127.0.0.1:9", 30, {}), max_requests=1, max_age=60)
        first = await manager.get_session()
        assert first.connector._keepalive_timeout == KEEPALIVE_SECONDS
        await manager.get_session()
        third = await manager.get_session()  # over max_requests: a new session...
        assert third is not first and not first.closed  # ...and the old one still open for its calls
        await manager.close()
        assert third.closed

    asyncio.run(scenario())


def test_batch_survives_a_trip_through_json():
    model = CandidateModel.fit(checkerboard(), CandidateParams(factors=4, iterations=5, seed=3, n_popular=3))
    batch = model.top_n(np.array([0, 1]), n=2)
    again = batch_from_json(json.loads(json.dumps(batch_to_json(batch))))
    for field in ("items", "scores", "cooc_scores"):
        for a, b in zip(getattr(batch, field), getattr(again, field), strict=True):
            np.testing.assert_array_equal(a, b)
    for source, ranks in batch.source_ranks.items():
        for a, b in zip(ranks, again.source_ranks[source], strict=True):
            np.testing.assert_array_equal(a, b)  # NaN where a source did not propose the item
