"""An experiment's shadow scored in a process of its own, at low priority: shown answers never share its GIL.

Scored in a thread of the worker, a shadow shared the interpreter with the
answers it overlapped: about 1-2% of requests ran at half speed and the
shown answers' p99 rose by a third (docs/experiments.md). Here the worker
only puts the request on a bounded queue (dropped and counted when full,
as before); a thread of its own writes it as one JSON line to the child's
stdin. The child (``python -m serving.shadow_process``, started with the
first shadow and stopped with the worker) runs at ``nice`` 10, loads each
shadow ranker once from the model store with its features refreshed,
gathers and scores as :class:`serving.shadow_scoring.ShadowScorer` does, and
logs the shadow lists to the event log itself. It costs a second interpreter
per worker while a shadow runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import subprocess  # nosec B404  # starts this module's child, fixed argv
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

from serving.api_models import RecommendRequest
from serving.children import child_environment
from serving.metrics import SHADOW_DROPPED

if TYPE_CHECKING:
    from serving.experiments import Experiment

logger = logging.getLogger(__name__)
NICE = 10  # below the workers: under CPU contention the shadow waits, not the answers
RESTART_SECONDS = 30.0


class _Resting(RuntimeError):
    """No shadow process now: the last one exited less than ``RESTART_SECONDS`` ago."""


class ShadowProcess:
    """The worker's side: ``offer`` as :class:`ShadowScorer`'s, the scoring in a child process."""

    def __init__(self, capacity: int = 64, command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "serving.shadow_process"]
        self.queue: queue.Queue[tuple[Experiment, list[RecommendRequest], list[str]] | None]
        self.queue = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._not_before = 0.0  # after a child died: no new one before this (monotonic), so no crash loop
        self.started = 0  # children started
        self._closing_seconds = 10.0
        # The child is started from this thread: it gets SIGTERM when this thread ends (serving.shared).
        self._thread = threading.Thread(target=self._feed, name="shadow-feed", daemon=True)
        self._thread.start()

    def offer(self, experiment: Experiment, requests: list[RecommendRequest], shown: list) -> None:
        try:
            self.queue.put_nowait((experiment, requests, [answer.request_id for answer in shown]))
        except queue.Full:
            self._drop(len(requests))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, let the child score it and flush its log (``timeout`` each), then stop it."""
        self._closing_seconds = timeout
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _drop(self, requests: int) -> None:
        self.dropped += requests
        SHADOW_DROPPED.inc(requests)

    def _feed(self) -> None:
        while (work := self.queue.get()) is not None:
            experiment, requests, request_ids = work
            try:
                stdin = self._stdin()
                stdin.write(_line(experiment, requests, request_ids))
                stdin.flush()
            except _Resting:  # the last child died moments ago: counted, not logged each time
                self._drop(len(requests))
            except OSError as exc:  # the child died with these in the pipe: lost
                logger.warning("shadow process: %s; %d requests dropped", exc, len(requests))
                self._drop(len(requests))
        if self._child is not None and self._child.stdin is not None:
            self._child.stdin.close()  # end of input: the child scores what it has, flushes its log, exits
            try:
                self._child.wait(timeout=self._closing_seconds)
            except subprocess.TimeoutExpired:
                self._child.kill()

    def _stdin(self) -> IO[bytes]:
        if self._child is not None and self._child.poll() is not None:
            code, self._child = self._child.returncode, None
            self._not_before = time.monotonic() + RESTART_SECONDS
            logger.error("shadow process exited with %s; another starts in %gs", code, RESTART_SECONDS)
        if self._child is None:
            if time.monotonic() < self._not_before:
                raise _Resting("the shadow process is resting after it exited")
            # B603 (bandit): this interpreter and this module (or a test's command), no shell
            self._child = subprocess.Popen(  # nosec B603
                self.command, stdin=subprocess.PIPE, env=child_environment()
            )
            self.started += 1
        assert self._child.stdin is not None
        return self._child.stdin


def _line(experiment: Experiment, requests: list[RecommendRequest], request_ids: list[str]) -> bytes:
    """One message to the child: what to score, with which ranker, under which request_ids."""
    shadow = experiment.shadow
    assert shadow is not None  # offered only for an experiment with a shadow
    message = {
        "experiment": experiment.name,
        "shadow": shadow.name,
        "ranker": str(shadow.runtime.tags.ranker),
        "popular": shadow.popular,
        "requests": [request.model_dump(mode="json") for request in requests],
        "request_ids": request_ids,
    }
    return json.dumps(message).encode() + b"\n"


def serve_shadows(lines: IO[str]) -> None:
    """The child: score every shadow line read, logging the lists, until the input ends."""
    from serving.experiments import Experiment, Shadow, load_arm
    from serving.runtime import Runtime
    from serving.settings import get_settings
    from serving.shadow_scoring import ShadowScorer
    from serving.shared import record_impressions, recorder_from, worker_threads

    settings = get_settings()
    worker_threads(settings)  # one BLAS thread, the worker's GIL interval, and SIGTERM when the worker dies
    os.nice(NICE)
    recorder = recorder_from(settings)
    scorer = ShadowScorer(lambda answers: record_impressions(recorder, answers))
    runtimes: dict[str, Runtime] = {}
    try:
        for line in lines:
            try:
                work = json.loads(line)
                tag = work["ranker"]
                if tag not in runtimes:
                    runtimes[tag] = load_arm(tag, settings)
                shadow = Shadow(work["shadow"], 0.0, runtimes[tag], work["popular"])
                experiment = Experiment(work["experiment"], "", (), shadow)
                requests = [RecommendRequest.model_validate(request) for request in work["requests"]]
            except Exception:  # one bad message (a ranker the store lacks) costs its requests, not the process
                logger.exception("shadow process: a message could not be scored")
                continue
            scorer.offer_ids(experiment, requests, work["request_ids"], wait=True)  # the pipe holds back the worker
    finally:
        scorer.close(timeout=30)
        for runtime in runtimes.values():
            runtime.stop_refresh()
        recorder.close()


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)  # through serve_shadows' finally: what was gathered is scored and the log flushed


def main(argv: list[str] | None = None) -> None:
    """The child's entry: started by a worker (:class:`ShadowProcess`), it reads its work from stdin."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    serve_shadows(sys.stdin)


if __name__ == "__main__":
    main()
