"""The micro-batcher: one call at a time, the queue answered together, overload and timeouts shed at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.batcher import MicroBatcher, Overloaded, Pressure, WorkClock


class Recorded:
    """A pipeline stand-in: doubles each query, remembers each call, and can be held open."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.threads: set[str] = set()

    def __call__(self, queries: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(5)
        self.calls.append(list(queries))
        if -1 in queries:
            raise ValueError("bad query")
        return [2 * q for q in queries]


def test_a_lone_request_is_answered_by_its_own_call_off_the_event_loop():
    run = Recorded()
    batcher = MicroBatcher(run)
    assert asyncio.run(batcher.submit([1, 2])) == [2, 4]
    assert run.calls == [[1, 2]]
    assert run.threads == {"recsys-pipeline_0"}


def test_a_light_request_that_arrives_alone_is_answered_on_the_event_loop():
    run = Recorded()
    batcher = MicroBatcher(run, inline_units=2)
    assert asyncio.run(batcher.submit([1, 2])) == [2, 4]  # cost 2: one unit a query
    assert run.threads == {threading.main_thread().name}
    assert asyncio.run(batcher.submit([1, 2, 3])) == [2, 4, 6]  # cost 3: to the thread
    assert run.threads == {threading.main_thread().name, "recsys-pipeline_0"}


def test_a_request_is_not_answered_inline_while_another_is_on_its_way():
    run = Recorded()
    pressure = Pressure()
    batcher = MicroBatcher(run, inline_units=2, pressure=pressure)

    async def scenario():
        pressure.reserved = 1  # another request's body read by the edge, its queries not queued yet
        await batcher.submit([1])
        pressure.reserved = 0
        run.gate.clear()
        held = asyncio.create_task(batcher.call(run, [5]))  # e.g. /similar_items, held in the thread
        await asyncio.sleep(0.05)
        behind = asyncio.create_task(batcher.call(run, [6]))  # waiting for the thread behind it
        await asyncio.sleep(0.05)
        behind.cancel()  # its client left before it started: that call is dropped, not run
        held.cancel()  # its client left too; the thread still runs its call
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit([1]))  # must not run beside it
        await asyncio.sleep(0.05)
        assert not second.done()
        run.gate.set()
        return await second

    assert asyncio.run(scenario()) == [2]
    assert run.threads == {"recsys-pipeline_0"}  # never two pipeline calls at once
    assert run.calls == [[1], [5], [1]]


def test_requests_queued_during_a_call_share_the_next_one_in_order():
    run = Recorded()
    batcher = MicroBatcher(run, max_batch=5)

    async def scenario():
        run.gate.clear()
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)  # the first call is running and held
        rest = [asyncio.create_task(batcher.submit([i, 10 + i])) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        run.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == [0] and rest == [[2, 22], [4, 24], [6, 26]]
    assert run.calls == [[0], [1, 11, 2, 12], [3, 13]]  # max_batch 5: the third request waits for the next call


def test_a_full_queue_sheds_at_once():
    run = Recorded()
    batcher = MicroBatcher(run, max_pending=3)

    async def scenario():
        run.gate.clear()
        running = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0)
        start = time.monotonic()
        with pytest.raises(Overloaded, match="3 queries already waiting"):
            await batcher.submit([4])
        shed_in = time.monotonic() - start
        run.gate.set()
        return await running, await queued, shed_in

    running, queued, shed_in = asyncio.run(scenario())
    assert (running, queued) == ([0], [2, 4, 6]) and shed_in < 0.05


def test_a_request_waiting_past_the_timeout_is_shed_and_never_computed():
    run = Recorded()
    batcher = MicroBatcher(run, timeout=0.2)

    async def scenario():
        run.gate.clear()
        running = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match=r"timed out after 0\.2s"):
            await batcher.submit([7])
        run.gate.set()
        await asyncio.sleep(0.1)
        return running

    asyncio.run(scenario())
    assert [7] not in run.calls


def test_a_failing_call_fails_only_its_own_requests():
    run = Recorded()
    batcher = MicroBatcher(run)

    async def scenario():
        with pytest.raises(ValueError, match="bad query"):
            await batcher.submit([-1])
        return await batcher.submit([3])

    assert asyncio.run(scenario()) == [6]


def test_a_faulty_request_batched_with_others_fails_alone():
    run = Recorded()
    batcher = MicroBatcher(run, max_batch=10)

    async def scenario():
        run.gate.clear()
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)  # held: the next three queue up and share one call
        rest = [asyncio.create_task(batcher.submit(q)) for q in ([1], [-1, 5], [2])]
        await asyncio.sleep(0.05)
        run.gate.set()
        return await first, await asyncio.gather(*rest, return_exceptions=True)

    first, (one, bad, two) = asyncio.run(scenario())
    assert first == [0] and one == [2] and two == [4]
    assert isinstance(bad, ValueError) and str(bad) == "bad query"
    # The shared call failed; then each request had a call of its own.
    assert run.calls == [[0], [1, -1, 5, 2], [1], [-1, 5], [2]]


def test_after_a_failed_call_requests_past_their_timeout_are_shed_not_computed_again():
    run = Recorded()
    batcher = MicroBatcher(run, timeout=0.2)

    async def scenario():
        run.gate.clear()
        both = asyncio.gather(batcher.submit([1]), batcher.submit([-1]), return_exceptions=True)
        await asyncio.sleep(0.3)  # the shared call is held past the timeout, then fails
        run.gate.set()
        return await both

    answers = asyncio.run(scenario())
    assert all(isinstance(a, Overloaded) and "timed out" in str(a) for a in answers)
    assert run.calls == [[1, -1]]


def test_the_pressure_gauge_says_full_exactly_while_the_queue_is():
    run, pressure = Recorded(), Pressure()
    batcher = MicroBatcher(run, max_pending=2, pressure=pressure)

    async def scenario():
        run.gate.clear()
        running = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)  # taken into a call: no longer pending
        assert (pressure.pending, pressure.full()) == (0, False)
        queued = asyncio.create_task(batcher.submit([1, 2]))
        await asyncio.sleep(0)
        assert (pressure.pending, pressure.full()) == (2, True)
        run.gate.set()
        await running, await queued
        assert (pressure.pending, pressure.full()) == (0, False)

    asyncio.run(scenario())


def test_a_request_larger_than_the_queue_is_taken_when_the_queue_is_empty():
    """Else a batch over ``max_pending`` queries would be refused forever, even by an idle worker."""
    run = Recorded()
    batcher = MicroBatcher(run, max_pending=3)

    async def scenario():
        run.gate.clear()
        large = asyncio.create_task(batcher.submit([1, 2, 3, 4, 5]))
        await asyncio.sleep(0.05)  # taken into a call: the queue is empty again
        queued = asyncio.create_task(batcher.submit([6, 7, 8, 9]))  # larger than the queue, which is empty
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="4 queries already waiting"):
            await batcher.submit([10])
        run.gate.set()
        return await large, await queued

    assert asyncio.run(scenario()) == ([2, 4, 6, 8, 10], [12, 14, 16, 18])


def test_room_held_for_an_admitted_request_counts_until_its_queries_are_queued():
    """Bodies the edge admitted and BentoML is still validating take room: a flood waits at the edge, unread."""
    pressure = Pressure(limit=200)
    first, second = pressure.reserve(100), pressure.reserve(100)
    assert first is not None and second is not None and pressure.reserve(1) is None
    first.release()
    first.release()  # released once, however many ways the request ends
    assert pressure.reserved == 100 and pressure.reserve(100) is not None

    async def scenario() -> None:
        held = Pressure()
        batcher = MicroBatcher(lambda queries: queries, max_pending=10, pressure=held)
        held.reserve(3)  # what the edge does for this task's request
        assert held.reserved == 3 and held.full(8)
        assert await batcher.submit([1, 2, 3]) == [1, 2, 3]
        assert (held.reserved, held.pending) == (0, 0)

    asyncio.run(scenario())


def test_time_in_the_queue_counts_from_the_arrival_at_the_edge():
    """A body that took most of the timeout to read and validate is shed well before a full timeout in the queue."""

    async def scenario() -> float:
        pressure = Pressure()
        batcher = MicroBatcher(lambda queries: time.sleep(1.0) or queries, timeout=0.8, pressure=pressure)
        busy = asyncio.ensure_future(batcher.submit([0]))  # holds the pipeline for 1 s
        await asyncio.sleep(0.01)
        reservation = pressure.reserve(1)
        assert reservation is not None
        reservation.since -= 0.7  # admitted 0.7 s ago
        start = time.monotonic()
        with pytest.raises(Overloaded, match=r"timed out after 0\.8s"):
            await batcher.submit([1])
        waited = time.monotonic() - start
        await busy
        return waited

    assert asyncio.run(scenario()) < 0.6  # counted from submit, it would have waited the whole 0.8 s


def test_the_edge_refuses_while_more_seconds_of_work_wait_than_allowed():
    """Seconds learned from the worker's own calls, each query weighed by its cost: heavy queries fill it sooner."""

    async def scenario() -> None:
        pressure = Pressure()
        batcher = MicroBatcher(
            lambda queries: time.sleep(0.02 * sum(queries)) or queries,
            max_pending=512,
            pressure=pressure,
            cost=float,  # a query's cost is its value: 20 ms a unit
            max_seconds_ahead=0.3,
        )
        assert pressure.refusal(100) is None  # nothing learned, nothing waiting: taken
        assert await batcher.submit([5]) == [5]
        assert batcher.clock.per_unit == pytest.approx(0.02, rel=0.5)
        running = asyncio.ensure_future(batcher.submit([10]))  # ~0.2 s
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit([10]))  # ~0.2 s more: ~0.4 s ahead of the next
        await asyncio.sleep(0.01)
        assert batcher.seconds_ahead() == pytest.approx(0.4, abs=0.15)
        assert pressure.refusal(1) == (  # 1 query waiting, but 0.4 s of work > 0.3 s
            "overloaded: more work is waiting in this worker than it answers in time; retry shortly"
        )
        assert await running == [10] and await queued == [10]
        assert batcher.seconds_ahead() == 0.0 and pressure.refusal(1) is None

    asyncio.run(scenario())


def test_cost_units_follow_recent_items_and_explanations():
    from serving.api_models import RecommendRequest, query_cost

    plain = RecommendRequest(user_id="1", k=100)
    heavy = RecommendRequest(user_id="1", k=100, explain=True, recent_items=[{"item_id": str(i)} for i in range(100)])
    assert query_cost(plain) == 1.0
    assert query_cost(heavy) == pytest.approx(1 + 0.6 + 0.6 + 100 / 30)


def test_a_slow_small_call_moves_the_clock_as_little_as_it_weighs():
    """Weighted by units: three one-query calls caught behind a busy moment raised a per-call mean 40 times."""
    clock = WorkClock()
    for _ in range(10):
        clock.learn(0.05, 100)  # 0.5 ms a query
    for _ in range(3):
        clock.learn(0.03, 1)  # one query, 30 ms
    assert clock.per_unit is not None and clock.per_unit < 0.0008
    assert clock.seconds(512) < 0.41
