"""Online experiments: a share of users served by another model pair, every answer naming its arm.

An experiment is declared in a JSON file (``RECSYS_EXPERIMENTS``, by default
``experiments.json`` at the feature store root) and re-read by the refresh
poll::

    {"name": "ranker-2026-12", "arms": [
        {"name": "control", "weight": 1},
        {"name": "new-ranker", "weight": 1, "ranker": "recsys-ranker:abc123"}]}

An arm without ``ranker`` is the pair the service serves; one with ``ranker``
is that ranker and the candidates model its card names, loaded once per
worker; one with ``interleave`` merges two pairs' lists by team draft; one
with ``"strategy": "popular"`` gives every user the popularity list. A
user's arm is a hash of the experiment's salt (its name unless given) and
the user id (a visitor's ``session_id`` when the request has one): the same
on every worker and replica, with no state to share.
A request may force an arm by name (the ``X-Recsys-Arm`` header, for QA);
such answers say so and the report counts them apart. A file that cannot be read or whose
arms cannot be loaded keeps the experiment served before it, and
``/model_info`` shows why.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from serving import heap
from serving.api_models import ExperimentArm, ExperimentInfo, RecommendRequest, RecommendResponse
from serving.experiment_spec import ArmSpec, ExperimentError, ExperimentSpec, experiments_path, file_stamp, read_spec
from serving.interleaving import interleaved
from serving.metrics import EXPERIMENT_ANSWERS
from serving.responses import answer, uncounted_answers
from serving.runtime import IncompatibleModels, Runtime, poll_in_thread
from serving.settings import ServiceSettings
from serving.shadow_scoring import ShadowSink

logger = logging.getLogger("recsys")
ARM_HEADER = "x-recsys-arm"  # QA: answer from this arm (counted apart)


def bucket(salt: str, unit: str) -> float:
    """A number in [0, 1) fixed by (salt, unit) and uniform over units: where a user falls among the arms."""
    digest = hashlib.blake2b(f"{salt}\0{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Arm:
    name: str
    share: float  # of users, from the weights
    runtime: Runtime  # the pair that answers; in an interleaving arm, team a
    partner: Runtime | None = None  # an interleaving arm's team b
    popular: bool = False  # a baseline arm: the served pair's popularity list for everyone


@dataclass(frozen=True)
class Shadow:
    name: str
    share: float  # of requests
    runtime: Runtime
    popular: bool = False


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    arms: tuple[Arm, ...]
    shadow: Shadow | None = None

    def arm_for(self, unit: str) -> Arm:
        """The arm a user (or a visitor's session) is in: the first whose cumulative share passes its bucket."""
        point, reached = bucket(self.salt, unit), 0.0
        for arm in self.arms:
            reached += arm.share
            if point < reached and arm.share > 0:
                return arm
        return next(arm for arm in reversed(self.arms) if arm.share > 0)  # rounding at the top end

    def arm_named(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)


class Experiments:
    """The experiment a worker serves, if any, kept as it was when a new file cannot be served."""

    def __init__(
        self,
        path: Path | None,
        served: Runtime,
        load: Callable[[str], Runtime],
        shadows: ShadowSink | None = None,
    ) -> None:
        self.path = path
        self.served = served
        self.load = load
        self.shadows = shadows  # where a shadow's requests go (the service's: a process of its own); none: unscored
        self.current: Experiment | None = None
        self.error: str | None = None
        self._read: tuple[int, bytes] | None = None  # the stamp of the file last read (_read_file)
        self._stop = threading.Event()
        self.reload()

    def reload(self) -> bool:
        """Read the file again if it changed; True when the experiment served changed."""
        stamp, content = file_stamp(self.path)
        if stamp == self._read:
            return False
        self._read = stamp
        try:
            spec = read_spec(self.path, content) if self.path is not None and stamp is not None else None
            experiment = self._build(spec) if spec is not None else None
        except ExperimentError as exc:
            self.error = str(exc)
            logger.error("experiments: %s; still serving %s", exc, self.current.name if self.current else "none")
            return False
        before, self.current, self.error = self.current, experiment, None
        kept = {id(r) for arm in experiment.arms for r in (arm.runtime, arm.partner)} if experiment else set()
        for arm in before.arms if before else ():
            for runtime in (arm.runtime, arm.partner):
                if runtime is not None and runtime is not self.served and id(runtime) not in kept:
                    runtime.stop_refresh()  # its features stop refreshing; it goes with the last request using it
        logger.info("experiments: serving %s", experiment.name if experiment else "none")
        return True

    def _build(self, spec: ExperimentSpec) -> Experiment:
        loaded = {str(self.served.tags.ranker): self.served}
        for arm in self.current.arms if self.current else ():
            for runtime in (arm.runtime, arm.partner):
                if runtime is not None:
                    loaded[str(runtime.tags.ranker)] = runtime

        def runtime_of(arm: ArmSpec, tag: str | None) -> Runtime:
            if tag is None:
                return self.served
            if tag not in loaded:
                try:
                    runtime = self.load(tag)
                except Exception as exc:  # any load failure keeps the previous experiment; the message says why
                    raise ExperimentError(f"arm {arm.name!r}: ranker {tag} cannot be served: {exc}") from None
                loaded[tag] = loaded[str(runtime.tags.ranker)] = runtime
            return loaded[tag]

        total = sum(arm.weight for arm in spec.arms)
        arms = []
        for arm in spec.arms:
            if arm.interleave is not None:
                first, second = (runtime_of(arm, tag) for tag in arm.interleave)
                arms.append(Arm(arm.name, arm.weight / total, first, second))
            else:
                popular = arm.strategy == "popular"
                arms.append(Arm(arm.name, arm.weight / total, runtime_of(arm, arm.ranker), popular=popular))
        shadow = None
        if spec.shadow is not None:
            shadow_arm = ArmSpec(name=spec.shadow.name, weight=0, ranker=spec.shadow.ranker)
            runtime = runtime_of(shadow_arm, spec.shadow.ranker)
            shadow = Shadow(spec.shadow.name, spec.shadow.share, runtime, spec.shadow.strategy == "popular")
        return Experiment(spec.name, spec.salt or spec.name, tuple(arms), shadow)

    def info(self) -> ExperimentInfo | None:
        """What ``/model_info`` shows: the experiment served and its arms' models, or why a file was refused."""
        experiment = self.current
        if experiment is None and self.error is None:
            return None
        return ExperimentInfo(
            name=experiment.name if experiment else None,
            arms=[
                {
                    "name": arm.name,
                    "share": round(arm.share, 6),
                    "model": arm.runtime.tags,
                    "interleaved_with": arm.partner.tags if arm.partner else None,
                    "strategy": "popular" if arm.popular else None,
                }
                for arm in (experiment.arms if experiment else ())
            ],
            error=self.error,
        )

    def force(self, requests: list[RecommendRequest], arms: list[str], batch: bool) -> None:
        """Mark requests to be answered from the arm the ``X-Recsys-Arm`` header names (``arms``: its values).

        No header forces nothing. A 400 if there is no such arm, or if two headers name different arms (the
        first one had won silently; two different API keys are a 401 too).
        """
        if not arms:
            return
        if len(set(arms)) > 1:
            named = ", ".join(repr(a[:64]) for a in sorted(set(arms))[:3])
            raise arm_error(f"one arm per request: the {ARM_HEADER} headers name {named}", batch)
        arm = arms[0]
        if self.current is None:
            raise arm_error("no experiment is running", batch)
        if self.current.arm_named(arm) is None:
            names = ", ".join(arm.name for arm in self.current.arms)
            raise arm_error(f"{arm[:64]!r} is not an arm of {self.current.name} ({names})", batch)
        for request in requests:
            request.force_arm(arm)

    def respond(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        """Each request answered by its arm's pipeline; the requests of one arm still share a call."""
        experiment = self.current
        if experiment is None:
            return answer(self.served.pipeline, requests, self.served.tags)
        chosen = []
        for request in requests:
            named = experiment.arm_named(request.forced_arm) if request.forced_arm is not None else None
            chosen.append((named or experiment.arm_for(request.session_id or request.user_id), named is not None))
        responses: list[RecommendResponse] = [None] * len(requests)  # type: ignore[list-item]  # all set below
        for arm in {arm.name: arm for arm, _ in chosen}.values():
            slots = [slot for slot, (other, _) in enumerate(chosen) if other is arm]
            asked = [requests[slot] for slot in slots]
            answered = answer(arm.runtime.pipeline, asked, arm.runtime.tags, popular=arm.popular)
            if arm.partner is not None:  # the second model of an interleaving arm: its answers are not counted again
                others = uncounted_answers(arm.partner, asked)
                answered = [interleaved(a, b, r.k) for a, b, r in zip(answered, others, asked, strict=True)]
            for slot, response in zip(slots, answered, strict=True):
                forced, session = chosen[slot][1], requests[slot].session_id
                response.experiment = ExperimentArm(
                    name=experiment.name, arm=arm.name, share=arm.share, forced=forced, session_id=session
                )
                EXPERIMENT_ANSWERS.labels(experiment=experiment.name, arm=arm.name, forced=str(forced).lower()).inc()
                responses[slot] = response
        if experiment.shadow is not None and self.shadows is not None:
            sampled = [
                s
                for s, r in enumerate(responses)
                if bucket(experiment.salt, r.request_id or "") < experiment.shadow.share
            ]
            if sampled:
                self.shadows.offer(experiment, [requests[s] for s in sampled], [responses[s] for s in sampled])
        return responses

    def start_refresh(self, every_seconds: float) -> None:
        """Re-read the file every ``every_seconds`` (the feature refresh's period) in a daemon thread."""
        served = lambda: self.current.name if self.current else "no experiment"  # noqa: E731
        poll_in_thread(every_seconds, self._stop, self.reload, None, served, who="experiments refresh")

    def stop(self) -> None:
        self._stop.set()
        if self.shadows is not None:
            self.shadows.close()


def arm_error(message: str, batch: bool) -> ValidationError:
    """The 400 for a forced arm that cannot be served, at the ``X-Recsys-Arm`` header."""
    loc = ("headers", ARM_HEADER)
    kind = PydanticCustomError("unknown_arm", "{message}", {"message": message})
    error = InitErrorDetails(type=kind, loc=loc, input=None)
    return ValidationError.from_exception_data("BatchRequest" if batch else "RecommendRequest", [error])


def experiments_from(
    settings: ServiceSettings,
    served: Runtime,
    refresh: bool = True,
    shadows: ShadowSink | None = None,
) -> Experiments:
    """The experiment a worker serves, its arms loaded as the served pair was.

    A file that cannot be served at start-up is :class:`IncompatibleModels`: the server refuses to start, as for
    a mismatched model pair. With ``refresh``, the file is re-read and each arm's features refreshed every
    ``refresh_seconds``. A shadow's requests go to ``shadows`` (none: no shadow is scored).
    """

    path = experiments_path(settings.experiments, served.feature_source)
    experiments = Experiments(path, served, lambda tag: load_arm(tag, settings, refresh), shadows=shadows)
    if experiments.error is not None:
        raise IncompatibleModels(f"experiments file: {experiments.error}")
    if refresh:
        experiments.start_refresh(settings.refresh_seconds)
    return experiments


def load_arm(tag: str, settings: ServiceSettings, refresh: bool = True) -> Runtime:
    """Another ranker's runtime (an arm, a shadow), loaded as the served pair is; with ``refresh``, settled and
    its features refreshed as the served pair's (serving/heap.py)."""
    runtime = Runtime.from_store(tag, feature_store=settings.feature_store, n_candidates=settings.n_candidates)
    if refresh:
        heap.settle()
        runtime.start_refresh(settings.refresh_seconds, after_swap=heap.settle)
    return runtime
