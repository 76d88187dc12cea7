"""Micro-batching and load shedding for one worker: the pipeline runs off the event loop, many requests per call.

One pipeline call runs at a time, in a worker thread, so the event loop
stays free for probes, ``/metrics`` and error answers however busy the
worker is. Requests that arrive while a call runs wait in a queue; when it
ends, everything queued (up to ``max_batch`` queries) goes into the next
call. There is no timer: a lone request is answered at once, and the batch
grows with the load by itself (the adaptive part), which is what pays for
the per-call overhead of CatBoost and numpy. A light request that arrives
when nothing else is on its way is answered on the event loop itself
(``inline_units``): the hand-off to the thread and back is what a lone
request paid for batching it did not use; probes have a port and a thread
of their own (serving/health.py).

Why not BentoML's ``batchable=True``: its dispatcher batches along one array
or list argument of a single API and returns one output per input; here a
single request and a 100-user batch request (two APIs, pydantic bodies,
per-request envelopes) must share the same calls, and shedding must answer
503 in the API's JSON envelope rather than raise from the dispatcher.

Load shedding: a request that would leave more than ``max_pending`` queries
waiting raises :class:`Overloaded` at once (the service answers 503 with
``Retry-After``), unless the queue is empty, which takes any request;
a request still queued after ``timeout`` seconds is dropped the same way,
so the request timeout really applies.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import bentoml

Q = TypeVar("Q")
R = TypeVar("R")
T = TypeVar("T")

BATCH_QUERIES = bentoml.metrics.Histogram(
    name="recsys_batch_queries",
    documentation="Queries answered by one pipeline call (micro-batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_SECONDS = bentoml.metrics.Histogram(
    name="recsys_queue_seconds",
    documentation="Time a request waited for its pipeline call",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INLINE = bentoml.metrics.Counter(
    name="recsys_inline_requests_total",
    documentation="Requests answered on the event loop: alone and light, not handed to the pipeline thread",
)
SHED = bentoml.metrics.Counter(
    name="recsys_shed_total",
    documentation="Requests answered 503 without being computed (queue full, or waited past the timeout)",
    labelnames=["reason"],
)


@dataclass
class Pressure:
    """How full this worker's queue is. The edge reads it to refuse work before reading a body.

    Shedding in the handler comes after BentoML has read, parsed and validated the body: under
    a flood that alone starves the event loop (probes included). So while the queue is full the
    edge answers 503 at once (``serving/edge.py``), and the handler's check only catches races.

    Once its body is read, a request holds the room its queries take (``reserved``) until they join
    the queue or it ends: counting only the queue let every request that arrived while a body was
    being validated in too. 50 clients sending 100-query batches with 100 recent items each: the
    event loop spent its time validating bodies then refused in the handler, and the 200s took 7-8 s
    here (11-14 s on a slower machine, past the 10 s bound).
    """

    pending: int = 0  # queries in the queue
    reserved: int = 0  # room held for admitted requests whose queries are not in the queue yet
    limit: int | None = None
    # Seconds of pipeline work queued and running, as the batcher estimates them, and how many the edge lets
    # wait ahead of a new request: a queue of the heaviest queries (100 recent items, explain, k=100: about six
    # plain ones each) held seconds of work in 512 queries.
    seconds_ahead: Callable[[], float] | None = None
    max_seconds: float | None = None

    def full(self, room: int = 1) -> bool:
        """Whether a request bringing up to ``room`` queries may not fit in the queue now.

        ``room`` is capped at the limit: with a queue smaller than the largest
        request, a request is let through whenever the queue is empty.
        """
        return self.limit is not None and self.pending + self.reserved + self._capped(room) > self.limit

    def refusal(self, room: int) -> str | None:
        """Why a request bringing up to ``room`` queries is refused before its body is read (None: it is not).

        Refused there, a request costs the event loop next to nothing; refused after validation, most of it.
        """
        if self.full(room):
            return "overloaded: this worker's queue has no room for this request; retry shortly"
        if self.busy_for_seconds():
            return "overloaded: more work is waiting in this worker than it answers in time; retry shortly"
        return None

    def reserve(self, room: int) -> Reservation | None:
        """Hold ``room`` queries for a request whose body was read (None: no room); the current task's reservation."""
        if self.full(room):
            return None
        reservation = Reservation(self, self._capped(room))
        self.reserved += reservation.room
        _RESERVATION.set(reservation)
        return reservation

    def busy_for_seconds(self) -> bool:
        """Whether more than ``max_seconds`` of work waits in the worker (never with nothing queued: a lone
        request is always taken, however long the running call)."""
        return (
            self.pending > 0
            and self.max_seconds is not None
            and self.seconds_ahead is not None
            and self.seconds_ahead() > self.max_seconds
        )

    def _capped(self, room: int) -> int:
        return room if self.limit is None else min(room, self.limit)


@dataclass
class Reservation:
    """Room held in a :class:`Pressure` for one request; released once (its queries queued, or it ended)."""

    pressure: Pressure
    room: int
    released: bool = False
    since: float = field(default_factory=time.monotonic)  # when the edge had read the request's body

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pressure.reserved -= self.room


_RESERVATION: ContextVar[Reservation | None] = ContextVar("recsys_reservation", default=None)


def release_reservation() -> float | None:
    """Release the room the edge held for the request this task serves; when its body was read (None: none held)."""
    reservation = _RESERVATION.get()
    if reservation is None:
        return None
    reservation.release()
    return reservation.since


PRESSURE = Pressure()  # this worker's (one batcher per worker)


class _Expired(Exception):
    """A queued request's time ran out before a pipeline call took it."""


class Overloaded(Exception):
    """The worker cannot take this request now; ``retry_after`` is the seconds a client should wait."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Waiting(Generic[Q, R]):
    queries: list[Q]
    future: asyncio.Future[list[R]]
    since: float = field(default_factory=time.monotonic)
    units: float = 0.0  # the queries' cost, in units of a plain query


@dataclass
class WorkClock:
    """Seconds of pipeline work per unit of cost, learned from the calls: decayed seconds over decayed units.

    Learned, not configured: machines of one kind differ 2.5x in speed, and a worker under load (the event
    loop holding the GIL) computes slower than one alone; the estimate follows both. Weighted by units, so
    a one-query call slowed by a busy moment moves it as little as it weighs (a mean per call let three
    such calls raise it 40 times). Calls are timed where they run (the pipeline thread, or the event loop for a
    lone inline one), not from when the event loop got the answer back.
    """

    half_life_units: float = 256.0  # the past counts half once this many units were learned since
    _seconds: float = 0.0
    _units: float = 0.0

    @property
    def per_unit(self) -> float | None:
        return self._seconds / self._units if self._units > 0 else None

    def learn(self, seconds: float, units: float) -> None:
        if units <= 0:
            return
        keep = 0.5 ** (units / self.half_life_units)
        self._seconds = keep * self._seconds + seconds
        self._units = keep * self._units + units

    def seconds(self, units: float) -> float:
        per_unit = self.per_unit
        return 0.0 if per_unit is None else units * per_unit


class MicroBatcher(Generic[Q, R]):
    """Answers ``submit(queries)`` with ``run(all queued queries)``, one call at a time, in a thread.

    A request that arrives alone (nothing queued, nothing in the thread, no
    other request's body read and on its way) and is light (``inline_units``
    of cost at most) is answered on the event loop instead: handing it to the
    thread and back cost more than batching it with nothing saves. Requests
    that arrive meanwhile wait in the kernel for about a plain query's time,
    then find the next ones on their way and are batched as before.
    """

    def __init__(
        self,
        run: Callable[[list[Q]], list[R]],
        max_batch: int = 256,
        max_pending: int = 512,
        timeout: float = 10.0,
        pressure: Pressure | None = None,
        cost: Callable[[Q], float] | None = None,
        max_seconds_ahead: float | None = None,
        inline_units: float = 0.0,
    ) -> None:
        self.run = run
        self.inline_units = inline_units
        # Calls handed to the thread and not finished: one leaves when it has run, or is cancelled before it starts.
        # (The last one handed over done is not enough: a queued call cancelled is done while one before it runs.)
        self._in_thread: set[Future] = set()
        self.cost = cost or (lambda query: 1.0)
        self.clock = WorkClock()
        self._queued_units = 0.0
        self._running_units = 0.0
        self._running_since = 0.0
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.timeout = timeout
        self.pressure = pressure or Pressure()
        self.pressure.limit = max_pending
        self.pressure.seconds_ahead = self.seconds_ahead
        self.pressure.max_seconds = max_seconds_ahead
        self._queue: deque[_Waiting[Q, R]] = deque()
        self._drainer: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-pipeline")

    async def submit(self, queries: list[Q]) -> list[R]:
        """The answers to ``queries``, in order, from the next pipeline call that has room for them."""
        # The room the edge held for this request is taken by its queries now. Its time in the queue counts from
        # when the edge had read its body: validating a large body under load took seconds of the bound.
        admitted = release_reservation()
        if self.pressure.full(len(queries)):  # a request larger than the whole queue is taken when it is empty
            SHED.labels(reason="queue_full").inc()
            raise Overloaded(f"overloaded: {self.pressure.pending} queries already waiting in this worker")
        units = sum(self.cost(q) for q in queries)
        if units <= self.inline_units and self._alone():
            return self._inline(queries, units)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(queries, loop.create_future(), units=units)
        if admitted is not None:
            waiting.since = admitted
        self._queue.append(waiting)
        self._queued_units += waiting.units
        self.pressure.pending += len(queries)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        # A request that times out (the sweeper) or whose client leaves (cancelled) is done: the drainer skips it.
        try:
            return await waiting.future
        except _Expired:
            SHED.labels(reason="timeout").inc()
            raise Overloaded(f"timed out after {self.timeout:g}s waiting for the pipeline") from None

    def _alone(self) -> bool:
        """Nothing queued, nothing running, no other request admitted by the edge and not queued yet."""
        return not self._in_thread and not self._queue and self.pressure.reserved == 0

    def _inline(self, queries: list[Q], units: float) -> list[R]:
        INLINE.inc()
        BATCH_QUERIES.observe(len(queries))
        QUEUE_SECONDS.observe(0.0)
        answers, seconds = self._timed(queries)
        self.clock.learn(seconds, units)
        return answers

    def seconds_ahead(self) -> float:
        """Estimated seconds of work queued and left in the running call (0 until the first call is timed)."""
        running = self.clock.seconds(self._running_units) - (time.monotonic() - self._running_since)
        return max(0.0, running) + self.clock.seconds(self._queued_units)

    async def call(self, function: Callable[..., R], *args: object) -> R:
        """Run another pipeline function in the same thread (never two pipeline calls at once)."""
        return await self._in_executor(function, *args)

    async def _in_executor(self, function: Callable[..., T], *args: object) -> T:
        """``function`` in the pipeline thread; until it has run (even for a caller that left), none inline."""
        job = self._executor.submit(function, *args)
        self._in_thread.add(job)
        job.add_done_callback(self._in_thread.discard)  # in the thread, or here if cancelled: one set operation
        return await asyncio.wrap_future(job)

    async def _sweep(self) -> None:
        """Expire the requests queued longer than the timeout, while anything is queued.

        One task for the whole queue rather than a timer per request: a cancelled
        timer stays in the loop's heap until it is due, holding its request's
        future, so at a few hundred requests a second the timers of the last 5 s
        (~30,000 objects) sat in the garbage collector's oldest generation and
        every full collection rescanned them (serving/heap.py). Every entry is
        looked at (at most ``max_pending``): a request's time counts from when
        its body was read, and a large body validated slowly joins the queue
        behind requests read after it.
        """
        step = min(self.timeout / 4, 0.25)
        while self._queue:
            await asyncio.sleep(step)
            oldest_allowed = time.monotonic() - self.timeout
            for waiting in self._queue:
                if waiting.since <= oldest_allowed and not waiting.future.done():
                    waiting.future.set_exception(_Expired())
                    self._queued_units -= waiting.units  # no longer work ahead of anyone
                    waiting.units = 0.0

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            queries = [q for waiting in batch for q in waiting.queries]
            BATCH_QUERIES.observe(len(queries))
            self._running_units = sum(waiting.units for waiting in batch)
            self._running_since = time.monotonic()
            try:
                answers, seconds = await self._in_executor(self._timed, queries)
                self.clock.learn(seconds, self._running_units)
            except Exception as error:
                self._running_units = 0.0
                if len(batch) == 1:
                    _settle(batch[0], error=error)
                else:  # one request's fault must not become every request's it was batched with
                    await self._one_by_one(batch)
                continue
            self._running_units = 0.0
            start = 0
            for waiting in batch:
                end = start + len(waiting.queries)
                if not waiting.future.done():
                    waiting.future.set_result(answers[start:end])
                start = end

    def _timed(self, queries: list[Q]) -> tuple[list[R], float]:
        """``run`` and its seconds, measured in the pipeline thread (a late event loop is not the pipeline's cost)."""
        start = time.perf_counter()
        answers = self.run(queries)
        return answers, time.perf_counter() - start

    async def _one_by_one(self, batch: list[_Waiting[Q, R]]) -> None:
        """After a failed call, each of its requests in a call of its own: the faulty one gets its own error.

        ``run`` must be safe to repeat for a request whose shared call failed (the service counts and logs
        only after a call succeeds). A request past its timeout by now is shed, not computed.
        """
        for waiting in batch:
            if waiting.future.done():
                continue
            if time.monotonic() - waiting.since > self.timeout:
                _settle(waiting, error=_Expired())
                continue
            try:
                answers = await self._in_executor(self.run, waiting.queries)
            except Exception as error:
                _settle(waiting, error=error)
            else:
                _settle(waiting, answers)

    def _take(self) -> list[_Waiting[Q, R]]:
        """Queued requests for one call: at least one, then more while they fit in ``max_batch``."""
        batch: list[_Waiting[Q, R]] = []
        size = 0
        now = time.monotonic()
        while self._queue:
            waiting = self._queue[0]
            if batch and size + len(waiting.queries) > self.max_batch:
                break
            self._queue.popleft()
            self.pressure.pending -= len(waiting.queries)
            self._queued_units = self._queued_units - waiting.units if self._queue else 0.0
            if waiting.future.done():  # timed out while queued
                continue
            QUEUE_SECONDS.observe(now - waiting.since)
            batch.append(waiting)
            size += len(waiting.queries)
        return batch


def _settle(waiting: _Waiting, answers: list | None = None, error: Exception | None = None) -> None:
    """Answer a request, unless it is done already (timed out, or its client left)."""
    if waiting.future.done():
        return
    if error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(answers)
