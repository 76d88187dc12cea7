"""Loading what the service serves, checking it fits together, refreshing features.

Everything here runs at start-up or in the refresh thread, never per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from features.compute import FeatureTables
from features.schema import is_in
from features.store import (
    MODEL_SNAPSHOT_DIR,
    SnapshotError,
    current_version,
    manifest_identity,
    read_manifest,
    read_snapshot,
)
from serving.api_models import ModelInfo, ModelTags
from serving.settings import ServiceSettings
from stages.candidates import CandidateModel
from stages.card import RANKER_MODEL, CandidatesCard, CardError, RankerCard
from stages.feature_view import FeatureNames, FeatureView
from stages.pipeline import TwoStageRecommender
from stages.ranker import RANKER_FILE, RECENT_RANKER_FILE, VISITOR_RANKER_FILE, Ranker
from stages.rules import HiddenItemsError, hidden_items_file, read_hidden

logger = logging.getLogger("recsys")
PACKED_SOURCE = "the snapshot packed with the candidates model"
# "/abs/path/x" or "C:\\x" in a message, and exception class names ("IndexError: ..."), are not for clients.
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"/\\:,;()]+)+[\\/]?")
_CLASS = re.compile(r"\b(?:[A-Z]\w*(?:Error|Exception|Warning)|Arrow\w+)\b:?\s*")


def public_message(message: str, root: str) -> str:
    """A refresh error as ``/model_info`` shows it: no filesystem paths, no exception class names."""
    text = message.replace(root, "<feature store>") if root else message
    return _CLASS.sub("", _PATH.sub("<path>", text)).strip() or "snapshot could not be loaded"


def public_source(source: str, packed: bool) -> str:
    """Where features come from, without a local absolute path: a URI as given, a folder by its name."""
    if packed:
        return PACKED_SOURCE
    if "://" in source:
        return source
    return Path(source).name or source


class IncompatibleModels(RuntimeError):
    """The loaded models or features do not belong together: refuse to serve."""


MIN_COVERAGE = 0.99  # share of the model's items, and of its users, a snapshot must describe


def check_coverage(version: str, tables: FeatureTables, candidates: CandidateModel) -> None:
    """A snapshot that describes too few of the model's items or users is a :class:`SnapshotError`.

    A snapshot written for half the catalogue used to be swapped in without a
    word: the other items lost their features and attributes (a genre filter
    then let through 252 of 1,682 items instead of 505). A refreshed snapshot
    may describe more (new items and users), never much less.
    """
    for what, known, wanted in (
        ("items", tables.items.index, candidates.item_ids),
        ("users", tables.users.index, candidates.user_ids),
    ):
        covered = int(is_in(wanted, known).sum())  # pandas' own isin: 1.9 s at 138k users, every start and refresh
        if len(wanted) and covered < MIN_COVERAGE * len(wanted):
            raise SnapshotError(
                f"snapshot {version} describes {covered:,} of the model's {len(wanted):,} {what}: "
                "not a snapshot for this model"
            )


class HiddenItems:
    """The operators' hidden list as served: read at start-up (a bad file refuses it), re-read on every poll.

    At run time a file that cannot be read keeps the list served before: an
    operator's typo must neither un-hide withdrawn items nor stop the refresh
    of anything else. The error stays in ``error`` (``/model_info``) until the
    file reads again, and is logged once.
    """

    def __init__(self, feature_source: str) -> None:
        self.location = hidden_items_file(feature_source)
        self.error: str | None = None
        try:
            self.items = read_hidden(self.location)
        except HiddenItemsError as exc:
            raise IncompatibleModels(f"hidden items: {exc}; fix or remove the file") from exc

    def reread(self) -> frozenset[str]:
        """The list now: the file's, or the one served before when it cannot be read."""
        try:
            self.items = read_hidden(self.location)
        except HiddenItemsError as exc:
            if str(exc) != self.error:
                logger.error("hidden items: %s; the %d items hidden before stay hidden", exc, len(self.items))
            self.error = str(exc)
            return self.items
        if self.error is not None:
            logger.warning("hidden items: the file reads again (%d items)", len(self.items))
        self.error = None
        return self.items


def stored_model(tag: str, role: str) -> bentoml.Model:
    """A model from the store, or an error that says how to get one."""
    try:
        return bentoml.models.get(tag)
    except NotFound as exc:
        raise IncompatibleModels(
            f"{role} model {tag!r} is not in the BentoML store; train first with `python -m train`"
        ) from exc


def ranker_card(model: bentoml.Model) -> RankerCard:
    """The ranker's model card, or :class:`IncompatibleModels` saying why it cannot be read."""
    try:
        return RankerCard.from_metadata(model.info.metadata, str(model.tag))
    except CardError as exc:
        raise IncompatibleModels(str(exc)) from exc


def paired_candidates_tag(ranker_tag: str, override: str | None = None) -> str:
    """The candidates model to load: the configured one, or the ranker's partner."""
    return override or ranker_card(stored_model(ranker_tag, "ranker")).candidates_tag


class SnapshotFollower:
    """The feature snapshot a process serves, and each new one the store's ``CURRENT`` names, checked alike.

    Both the one-process service (:class:`Runtime`) and the split topology's
    candidate stage follow the store through this, so a snapshot one of them
    refuses (features the ranker lacks, too few of the model's items or users)
    the other refuses too. At start-up a bad snapshot refuses the start
    (:class:`IncompatibleModels`); afterwards it is kept out and recorded in
    ``error`` (``/model_info``), once per distinct failure in the log.
    """

    RETRY_UNEXPECTED_SECONDS = 300.0  # a loader that broke may have met a passing I/O error: read it again then

    def __init__(
        self,
        feature_source: str,
        candidates: CandidateModel,
        names: FeatureNames | None,
        who: str = "feature refresh",
        prepare: bool = True,
    ) -> None:
        self.source = feature_source
        self.candidates = candidates
        self.names = names  # the ranker's features, every snapshot must have them (None: none is checked for)
        self.who = who
        self.prepare = prepare  # build the ranker's row plan (the candidate stage checks the names, builds no rows)
        try:
            self.view, self._served_identity = self.load()
        except SnapshotError as exc:  # the snapshot CURRENT names now cannot serve: the start is refused
            raise IncompatibleModels(f"feature store {feature_source}: {exc}") from exc
        self.error: str | None = None
        self._served_pointer: str | None = None
        self._failed: tuple | None = None
        self._retry_at = float("inf")  # when a snapshot that broke the loader is read again

    def load(self, version: str | None = None) -> tuple[FeatureView, tuple]:
        """Read a snapshot and check it serves this model (and ranker); the view and the snapshot's identity."""
        snapshot = read_snapshot(self.source, version)
        view = FeatureView(
            snapshot.tables, self.candidates.item_ids, self.candidates.als.item_factors, snapshot.version
        )
        if self.names is not None and (missing := view.missing(self.names)):
            raise SnapshotError(f"snapshot {snapshot.version} lacks features the ranker needs: {missing}")
        check_coverage(snapshot.version, snapshot.tables, self.candidates)
        if self.names is not None and self.prepare:
            view.prepare(self.names)
        return view, manifest_identity(snapshot.manifest)

    def poll(self, swap: Callable[[FeatureView], None] | None = None) -> FeatureView | None:
        """The view of the snapshot ``CURRENT`` names if it is new and good (then it is served); ``None`` otherwise.

        ``swap`` puts the view in service (a new pipeline over it); only once it
        returns is the snapshot counted as served, so a swap that fails is
        recorded like a bad snapshot and neither ``/model_info`` nor the next
        poll takes it for the one in service.

        A snapshot is known by its manifest, not its folder name: a copy of the
        served one under another name is not reloaded, and a bad one is not
        read again until ``CURRENT`` changes. Every failure, expected or not,
        is recorded; it clears once a good snapshot is served.
        """
        pointer = identity = None
        loaded = False
        try:
            pointer = current_version(self.source)
            if pointer == self._served_pointer:
                self.error = None
                return None
            identity = manifest_identity(read_manifest(self.source, pointer))
            if identity == self._served_identity:
                self._served_pointer, self.error = pointer, None
                return None
            if (pointer, identity) == self._failed and time.monotonic() < self._retry_at:
                return None  # the same bad snapshot: not read (nor logged) again
            view, identity = self.load(pointer)
            loaded = True
            if swap is not None:
                swap(view)
        except SnapshotError as exc:
            self._record_failure(str(exc), (pointer, identity))
            return None
        except Exception as exc:  # a snapshot that breaks the loader must not break the refresh loop
            what = f"snapshot {pointer}" if pointer is not None else "the CURRENT pointer"
            failed = "was read but could not be swapped in" if loaded else "could not be loaded"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            message = f"{what} {failed}: {reason}"
            self._record_failure(message, (pointer, identity), unexpected=True)
            return None
        self.view, self._served_pointer, self._served_identity, self._failed = view, pointer, identity, None
        self.error = None
        return view

    def _record_failure(self, message: str, snapshot: tuple, unexpected: bool = False) -> None:
        if snapshot[1] is not None:
            self._failed = snapshot
            # A SnapshotError is the snapshot's own: final until CURRENT changes. Anything else is read again later.
            self._retry_at = time.monotonic() + self.RETRY_UNEXPECTED_SECONDS if unexpected else float("inf")
        public = public_message(message, self.source)
        if public != self.error:
            # Logged once per distinct failure; a traceback only when the loader itself broke.
            logger.error("%s failed, still serving %s: %s", self.who, self.view.version, message, exc_info=unexpected)
        self.error = public


class Runtime:
    """Both models, the live feature view and the pipeline over them (built by :meth:`from_store`)."""

    def __init__(
        self,
        candidates_model: bentoml.Model,
        ranker_model: bentoml.Model,
        feature_store: str | None = None,
        n_candidates: int | None = None,
    ) -> None:
        self.card = ranker_card(ranker_model)
        self.tags = ModelTags(candidates=str(candidates_model.tag), ranker=str(ranker_model.tag))
        if self.card.candidates_tag != self.tags.candidates:
            raise IncompatibleModels(
                f"ranker {self.tags.ranker} was trained against candidates model "
                f"{self.card.candidates_tag}, but {self.tags.candidates} is loaded; "
                "unset RECSYS_CANDIDATES_TAG or retrain"
            )
        try:
            candidates_card = CandidatesCard.from_metadata(candidates_model.info.metadata, self.tags.candidates)
        except CardError as exc:
            raise IncompatibleModels(str(exc)) from exc
        self.candidates = CandidateModel.load(Path(candidates_model.path), candidates_card.params)
        self.names = self.card.features
        folder = Path(ranker_model.path)
        self.ranker = Ranker.load(folder / RANKER_FILE, self.names, self.card.prior)
        self.visitor_ranker = (
            Ranker.load(folder / VISITOR_RANKER_FILE, self.names, self.card.visitor_prior)
            if self.card.visitor_ranker
            else None
        )
        self.recent_ranker = (
            Ranker.load(folder / RECENT_RANKER_FILE, self.names, self.card.recent_prior)
            if self.card.recent_ranker
            else None
        )
        # The tree tables scoring and `explain` read are built at load (~30 ms each), not by the first request.
        for ranker in (self.ranker, self.visitor_ranker, self.recent_ranker):
            if ranker is not None:
                ranker.paths  # noqa: B018
                ranker.trees  # noqa: B018
        self.feature_source = feature_store or str(Path(candidates_model.path) / MODEL_SNAPSHOT_DIR)
        self._packed = feature_store is None
        self.hidden = HiddenItems(self.feature_source)
        self.snapshots = SnapshotFollower(self.feature_source, self.candidates, self.names)
        self.pipeline = TwoStageRecommender(
            self.candidates,
            self.ranker,
            self.snapshots.view,
            n_candidates or self.card.n_candidates,
            self.hidden.items,
            self.visitor_ranker,
            self.recent_ranker,
        )
        self.pipeline.check_fast_scoring()  # the category hashes built now, and checked, not by the first request
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_store(
        cls,
        ranker_tag: str = f"{RANKER_MODEL}:latest",
        candidates_tag: str | None = None,
        feature_store: str | None = None,
        n_candidates: int | None = None,
    ) -> Runtime:
        """The runtime for a ranker in the model store and (by default) the candidates model it names."""
        ranker = stored_model(ranker_tag, "ranker")
        candidates = stored_model(candidates_tag or ranker_card(ranker).candidates_tag, "candidates")
        return cls(candidates, ranker, feature_store, n_candidates)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Runtime:
        """The runtime the service's settings describe (the batch CLI, benchmarks, the start-up check)."""
        return cls.from_store(
            settings.ranker_tag, settings.candidates_tag, settings.feature_store, settings.n_candidates
        )

    def info(self) -> ModelInfo:
        """What is being served and how it scored offline (``/model_info``)."""
        card = self.card
        return ModelInfo(
            model=self.tags,
            trained_at=card.trained_at,
            data_fingerprint=card.data_fingerprint,
            dataset=card.dataset,
            n_users=len(self.candidates.user_ids),
            n_items=self.candidates.n_items,
            n_candidates=self.pipeline.n_candidates,
            feature_version=self.view.version,
            feature_source=public_source(self.feature_source, self._packed),
            feature_refresh_error=self.refresh_error,
            hidden_items_error=self.hidden.error,
            features=self.names.all,
            evaluation=card.evaluation,
            kernels=card.kernels,
        )

    @property
    def view(self) -> FeatureView:
        return self.pipeline.view

    @property
    def refresh_error(self) -> str | None:
        """Why the snapshot ``CURRENT`` names is not served (``None``: it is)."""
        return self.snapshots.error

    def refresh_hidden(self) -> bool:
        """Swap in the hidden list if the file changed (the refresh poll does this along with snapshots).

        A file that cannot be read keeps the list served before (shown in ``/model_info``).
        """
        hidden = self.hidden.reread()
        if hidden == self.pipeline.hidden:
            return False
        self.pipeline = self.pipeline.with_hidden(hidden)
        logger.info("hidden items now %d", len(hidden))
        return True

    def refresh_once(self) -> bool:
        """Swap in the hidden list if it changed, and the snapshot ``CURRENT`` names if it is new and good (a bad one
        is kept out: :meth:`SnapshotFollower.poll`); whether a snapshot was swapped in."""
        self.refresh_hidden()
        old = self.view.version

        def swap(view: FeatureView) -> None:
            pipeline = self.pipeline.with_view(view)
            pipeline.check_fast_scoring()  # the new values' hashes, built and checked before a request needs them
            # One reference assignment: requests in flight keep the pipeline they started with.
            self.pipeline = pipeline

        view = self.snapshots.poll(swap)
        if view is None:
            return False
        logger.info("feature snapshot swapped: %s -> %s", old, view.version)
        return True

    def start_refresh(self, every_seconds: float, after_swap: Callable[[], None] | None = None) -> None:
        """Poll the feature store in a daemon thread (0 turns it off); ``after_swap`` runs after each new snapshot."""
        if self._thread is None:
            served = lambda: self.view.version  # noqa: E731 (read at log time: the view changes)
            self._thread = poll_in_thread(every_seconds, self._stop, self.refresh_once, after_swap, served)

    def stop_refresh(self) -> None:
        self._stop.set()


def poll_in_thread(
    every_seconds: float,
    stop: threading.Event,
    refresh_once: Callable[[], bool],
    after_swap: Callable[[], None] | None,
    served: Callable[[], str],
    who: str = "feature refresh",
) -> threading.Thread | None:
    """Call ``refresh_once`` every ``every_seconds`` in a daemon thread until ``stop`` (0: no thread).

    ``after_swap`` runs when it swapped something in. Any exception is logged
    with what is still served (``served()``) and the polling goes on: a
    refresh problem must never take serving down.
    """
    if every_seconds <= 0:
        return None

    def loop() -> None:
        while not stop.wait(every_seconds):
            try:
                if refresh_once() and after_swap is not None:
                    after_swap()
            except Exception:
                logger.exception("%s crashed; still serving %s", who, served())

    thread = threading.Thread(target=loop, name="feature-refresh", daemon=True)
    thread.start()
    return thread
