"""The request path over real HTTP: batched answers equal one-by-one answers, overload is shed, probes stay up."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import httpx
import numpy as np
import pytest

from benchmarks.servers import free_port
from stages.pipeline import Query
from tests.support import serve

pytestmark = pytest.mark.slow


HEALTH_PORT = free_port()


@pytest.fixture(scope="module")
def small_queue(movielens_run, tmp_path_factory):
    """One worker letting 300 queries wait (three batches: the edge holds 100 for each), with the probe port open."""
    run, _ = movielens_run
    env = {
        "RECSYS_HEALTH_PORT": str(HEALTH_PORT),
        "RECSYS_RANKER_TAG": run.ranker_tag,
        "RECSYS_REFRESH_SECONDS": "0",
        "RECSYS_EVENT_LOG": "",
        "RECSYS_WORKERS": "1",
        "RECSYS_MAX_PENDING_QUERIES": "300",
    }
    with serve("service:Recommender", env) as live:
        yield live


async def _post_all(url: str, path: str, bodies: list[dict]) -> list[tuple[int, dict, dict]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(body: dict) -> tuple[int, dict, dict]:
            async with session.post(f"{url}{path}", json=body) as response:
                return response.status, dict(response.headers), await response.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def _counter(metrics: str, name: str) -> float:
    found = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", metrics, re.M)
    return float(found[1]) if found else 0.0


def _calls(metrics: str) -> float:
    return _counter(metrics, "recsys_batch_queries_count")


def _inline(metrics: str) -> float:
    return _counter(metrics, "recsys_inline_requests_total")


def test_concurrent_requests_share_calls_and_get_the_one_by_one_answers(small_queue, offline):
    users = [str(u) for u in range(1, 41)]
    with small_queue.client() as http:
        calls_before = _calls(http.get("/metrics").text)
        answers = asyncio.run(_post_all(small_queue.url, "/recommend", [{"user_id": u, "k": 10} for u in users]))
        calls = _calls(http.get("/metrics").text) - calls_before
        # The same requests one at a time: each alone, answered on the event loop (serving/batcher.py).
        inline_before = _inline(http.get("/metrics").text)
        lone = [http.post("/recommend", json={"user_id": u, "k": 10}).json() for u in users[:8]]
        inline = _inline(http.get("/metrics").text) - inline_before
    assert all(status == 200 for status, _, _ in answers)
    assert calls < len(users)  # some pipeline calls answered several requests
    assert inline == len(lone)
    for user, (_, _, body) in zip(users, answers, strict=True):
        [alone] = offline.pipeline.recommend([Query(user, k=10)])
        assert [r["item_id"] for r in body["recommendations"]] == alone.item_ids
        assert [r["score"] for r in body["recommendations"]] == pytest.approx(alone.scores, abs=1e-6)
    for body, (_, _, batched) in zip(lone, answers, strict=False):
        assert body["recommendations"] == batched["recommendations"]


def test_overload_is_shed_at_once_with_503_and_retry_after(small_queue):
    bodies = [{"requests": [{"user_id": str(1 + (i * 20 + j) % 900), "k": 10} for j in range(20)]} for i in range(30)]
    answers = asyncio.run(_post_all(small_queue.url, "/recommend_batch", bodies))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    for status, headers, body in answers:
        if status == 503:  # shed by the edge before the body was read: an admitted request holds its room
            assert headers["Retry-After"] == "1"
            assert (body["status"], body["error"]) == ("error", "service_unavailable")
            assert body["message"] == "overloaded: this worker's queue has no room for this request; retry shortly"
        else:
            assert len(body["results"]) == 20


def test_probes_answer_while_the_worker_is_busy(small_queue):
    """/livez is answered between pipeline calls, not after the queue: far sooner than the work it waits beside."""
    work, probes = asyncio.run(_busy_with_probes(small_queue.url, f"{small_queue.url}/livez"))
    assert np.median(probes) < max(work) / 3, (probes, work)


def test_the_probe_port_answers_from_its_own_thread_while_the_worker_is_busy(small_queue):
    """The probe port needs neither the event loop nor the pipeline thread: it says the loop beat recently."""
    work, probes = asyncio.run(_busy_with_probes(small_queue.url, f"http://127.0.0.1:{HEALTH_PORT}/readyz"))
    assert np.median(probes) < max(work) / 3, (probes, work)
    answer = httpx.get(f"http://127.0.0.1:{HEALTH_PORT}/livez").json()
    assert answer["status"] == "ok"
    assert answer["event_loop_ms"] < 5_000
    assert httpx.get(f"http://127.0.0.1:{HEALTH_PORT}/recommend").status_code == 404


async def _busy_with_probes(service_url: str, probe_url: str) -> tuple[list[float], list[float]]:
    """Three 20-user batches sent at once and ten probes of ``probe_url`` meanwhile: seconds each took."""
    bodies = [{"requests": [{"user_id": str(1 + (i * 20 + j) % 900), "k": 50} for j in range(20)]} for i in range(3)]
    work, probes = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def batch(body: dict) -> None:
            start = time.perf_counter()
            async with session.post(f"{service_url}/recommend_batch", json=body) as response:
                assert response.status == 200
                await response.read()
            work.append(time.perf_counter() - start)

        async def probe() -> None:
            await asyncio.sleep(0.01)
            for _ in range(10):
                start = time.perf_counter()
                async with session.get(probe_url) as response:
                    assert response.status == 200
                probes.append(time.perf_counter() - start)

        await asyncio.gather(*(batch(b) for b in bodies), probe())
    return work, probes
