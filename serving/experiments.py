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
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from serving import heap
from serving.api_models import ExperimentArm, ExperimentInfo, RecommendRequest, RecommendResponse
from serving.metrics import EXPERIMENT_ANSWERS, SHADOW_DROPPED
from serving.responses import answer, to_queries, to_responses
from serving.runtime import IncompatibleModels, Runtime, poll_in_thread
from serving.settings import ServiceSettings

logger = logging.getLogger("recsys")
EXPERIMENTS_FILE = "experiments.json"
ARM_HEADER = "x-recsys-arm"  # QA: answer from this arm (counted apart)
MAX_ARMS = 8
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ExperimentError(ValueError):
    """An experiments file that cannot be served: the message says what to fix."""


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    weight: float = Field(ge=0, description="relative share of users; 0 keeps the arm for forced requests only")
    ranker: str | None = Field(None, min_length=1, description="ranker tag; none: the pair the service serves")
    interleave: list[str | None] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="two ranker tags (null: the served pair) whose lists are merged by team draft",
    )

    strategy: Literal["popular"] | None = Field(
        None, description="a baseline instead of a model: popular, the cold-start list for every user"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ArmSpec:
        if sum(x is not None for x in (self.ranker, self.interleave, self.strategy)) > 1:
            raise ValueError("an arm has one of ranker, interleave and strategy")
        return self

    @field_validator("weight")
    @classmethod
    def _finite(cls, weight: float) -> float:
        if not math.isfinite(weight):
            raise ValueError("weight must be a finite number")
        return weight


class ShadowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    ranker: str | None = Field(None, min_length=1, description="ranker tag; none: the pair the service serves")
    strategy: Literal["popular"] | None = Field(None, description="popular: the popularity baseline")
    share: float = Field(0.1, gt=0, le=1, description="share of requests scored in the shadow")

    @model_validator(mode="after")
    def _one_kind(self) -> ShadowSpec:
        if self.ranker is not None and self.strategy is not None:
            raise ValueError("a shadow has a ranker or a strategy, not both")
        return self


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    salt: str | None = Field(None, max_length=128, description="assignment salt; by default the name")
    arms: list[ArmSpec] = Field(min_length=2, max_length=MAX_ARMS)
    shadow: ShadowSpec | None = Field(None, description="scored off the request path for a share of requests")

    @model_validator(mode="after")
    def _arms_apart(self) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ: {names}")
        if sum(arm.weight for arm in self.arms) <= 0:
            raise ValueError("at least one arm needs a weight above 0")
        return self


def read_spec(path: Path, content: bytes | None = None) -> ExperimentSpec | None:
    """The experiment a file declares (``content``: its bytes, when already read); ``None`` when there is no file."""
    try:
        text = (path.read_bytes() if content is None else content).decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"{path.name} cannot be read: {exc}") from None
    try:
        return ExperimentSpec.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path.name} is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ExperimentError(f"{path.name}: {problems}") from None


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
        stamp, content = _read_file(self.path)
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


class ShadowSink(Protocol):
    """Where the request path puts a shadow's requests: it must not block, and drops what it cannot take."""

    def offer(
        self, experiment: Experiment, requests: list[RecommendRequest], shown: list[RecommendResponse]
    ) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


class ShadowScorer:
    """Scores sampled requests with an experiment's shadow in a thread of its own: never shown, never waited for.

    The request path only puts the requests on a bounded queue; when the queue
    is full (the shadow cannot keep up, the worker is loaded) they are dropped
    and counted (``recsys_shadow_dropped_total``): the shadow goes first.
    Nobody waits for a shadow, so it gathers what arrives within
    ``gather_seconds`` of a request (up to ``batch`` requests) into one pipeline
    call: 16 requests together cost a third of what 16 calls of one do.
    Shadow lists carry the request_id of the list shown, so the report compares
    them with it and with the feedback that followed. The service runs it in a
    process of its own (:mod:`serving.shadow_process`); in a worker's thread it
    would share the GIL with the answers it overlaps.
    """

    def __init__(
        self,
        record: Callable[[list[RecommendResponse]], None],
        capacity: int = 64,
        batch: int = 16,
        gather_seconds: float = 0.2,
    ) -> None:
        self.record = record
        self.batch, self.gather_seconds = batch, gather_seconds
        self.queue: queue.Queue[tuple[Experiment, list[RecommendRequest], list[str | None]] | None]
        self.queue = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="shadow-scoring", daemon=True)
        self._thread.start()

    def offer(self, experiment: Experiment, requests: list[RecommendRequest], shown: list[RecommendResponse]) -> None:
        """Queue the requests just answered by ``shown``; dropped and counted when the queue is full."""
        self.offer_ids(experiment, requests, [answer.request_id for answer in shown])

    def offer_ids(
        self,
        experiment: Experiment,
        requests: list[RecommendRequest],
        request_ids: list[str | None],
        wait: bool = False,
    ) -> None:
        """Queue requests under the request_ids of the lists shown; ``wait`` for room rather than drop."""
        try:
            self.queue.put((experiment, requests, request_ids), block=wait)
        except queue.Full:
            self.dropped += len(requests)
            SHADOW_DROPPED.inc(len(requests))

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued, then stop (at shutdown; what is still queued after ``timeout`` is lost)."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (work := self.queue.get()) is not None:
            time.sleep(self.gather_seconds)  # the queue stays bounded meanwhile: what does not fit is dropped
            gathered, stop = [work], False
            while sum(len(requests) for _, requests, _ in gathered) < self.batch:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # closing: score what was gathered, then stop
                    stop = True
                    break
                gathered.append(more)
            self._score_gathered(gathered)
            if stop:
                return

    def _score_gathered(self, gathered: list[tuple[Experiment, list[RecommendRequest], list[str | None]]]) -> None:
        """One pipeline call per shadow among the gathered (a file re-read may have replaced it meanwhile)."""
        by_shadow: dict[tuple, tuple[Experiment, list[RecommendRequest], list[str | None]]] = {}
        for experiment, requests, request_ids in gathered:
            shadow = experiment.shadow
            assert shadow is not None  # offered only for an experiment with a shadow
            key = (experiment.name, shadow.name, id(shadow.runtime), shadow.popular)
            _, all_requests, all_ids = by_shadow.setdefault(key, (experiment, [], []))
            all_requests += requests
            all_ids += request_ids
        for experiment, requests, request_ids in by_shadow.values():
            try:
                self.record(self.score(experiment, requests, request_ids))
            except Exception:  # a shadow must never take the worker down; the shown answers are long gone
                logger.exception("shadow scoring of %d requests failed", len(requests))

    @staticmethod
    def score(experiment: Experiment, requests: list[RecommendRequest], request_ids: list[str | None]):
        """The shadow's answers to requests already answered, under their request_ids; no metric counts them."""
        shadow = experiment.shadow
        assert shadow is not None  # offered only for an experiment with a shadow
        answers = uncounted_answers(shadow.runtime, requests, shadow.popular)
        for listed, request_id in zip(answers, request_ids, strict=True):
            listed.request_id = request_id
            listed.experiment = ExperimentArm(name=experiment.name, arm=shadow.name, share=0.0, shadow=True)
        return answers


def uncounted_answers(runtime: Runtime, requests: list[RecommendRequest], popular: bool = False):
    """A pipeline's answers that no metric counts: a shadow's, an interleaving arm's second model's."""
    queries = to_queries(requests)
    found = runtime.pipeline.popular_baseline(queries) if popular else runtime.pipeline.recommend(queries)
    return to_responses(found, runtime.tags, count_cold_starts=False)


def team_draft(first: list[str], second: list[str], k: int, coin: random.Random) -> list[tuple[str, str]]:
    """Two rankings merged by team draft (Radlinski, Kurup and Joachims, 2008): ``(item, team)``, at most ``k``.

    The team with fewer picks picks next (a coin decides a tie) and adds its
    highest-ranked item not yet in the list, so each model's items keep its
    order, and a position's team is as likely one as the other. A team whose
    list runs out leaves the rest to the other.
    """
    lists, picks, merged, chosen = {"a": first, "b": second}, {"a": 0, "b": 0}, [], set()
    places = {"a": 0, "b": 0}
    while len(merged) < k:
        left = {t: [i for i in lists[t][places[t] :] if i not in chosen] for t in lists}
        teams = [t for t in ("a", "b") if left[t]]
        if not teams:
            break
        if len(teams) == 2:
            team = "a" if picks["a"] < picks["b"] else "b" if picks["b"] < picks["a"] else coin.choice("ab")
        else:
            team = teams[0]
        item = left[team][0]
        places[team] = lists[team].index(item) + 1
        picks[team] += 1
        chosen.add(item)
        merged.append((item, team))
    return merged


def interleaved(a: RecommendResponse, b: RecommendResponse, k: int) -> RecommendResponse:
    """``a``'s answer with its items replaced by ``a``'s and ``b``'s merged by team draft, each item's team said.

    The coin is seeded by the answer's ``request_id``: the same list for the same id. Scores stay each
    model's own (not comparable across teams); ``model`` names team a, ``/model_info`` both.
    """
    found = {("a", item.item_id): item for item in a.recommendations} | {
        ("b", item.item_id): item for item in b.recommendations
    }
    coin = random.Random(a.request_id)  # nosec B311: a fair coin, not a secret
    order = team_draft([i.item_id for i in a.recommendations], [i.item_id for i in b.recommendations], k, coin)
    first = min((i.rank for i in [*a.recommendations, *b.recommendations]), default=1)  # past an offset's items
    items = [
        found[(team, item)].model_copy(update={"rank": rank, "team": team})
        for rank, (item, team) in enumerate(order, start=first)
    ]
    return a.model_copy(update={"recommendations": items})


def arm_error(message: str, batch: bool) -> ValidationError:
    """The 400 for a forced arm that cannot be served, at the ``X-Recsys-Arm`` header."""
    loc = ("headers", ARM_HEADER)
    kind = PydanticCustomError("unknown_arm", "{message}", {"message": message})
    error = InitErrorDetails(type=kind, loc=loc, input=None)
    return ValidationError.from_exception_data("BatchRequest" if batch else "RecommendRequest", [error])


def _read_file(path: Path | None) -> tuple[tuple[int, bytes] | None, bytes | None]:
    """The file's stamp, its modification time and a digest of what it holds, and those bytes (None: no file).

    The digest sees an edit that keeps the size on a filesystem whose clock is too coarse to change the time;
    the time sees a ``touch``, which retries a file refused for a model the store lacked. The file is small, and
    read once: the stamp and the experiment come from the same bytes.
    """
    if path is None:
        return None, None
    try:
        mtime, content = path.stat().st_mtime_ns, path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:  # read_spec says why; a new error is a new stamp
        return (0, f"unreadable: {exc}".encode()), None
    return (mtime, hashlib.blake2b(content, digest_size=16).digest()), content


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


def experiments_path(setting: str | None, feature_source: str) -> Path | None:
    """The experiments file: the setting, else ``experiments.json`` at a local feature store's root."""
    if setting:
        return Path(setting)
    if "://" in feature_source:
        return None
    return Path(feature_source) / EXPERIMENTS_FILE
