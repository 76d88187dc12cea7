"""Loading what the service serves, checking it fits together, refreshing features.

Everything here runs at start-up or in the refresh thread, never per request.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound
from threadpoolctl import threadpool_limits

from features.store import MODEL_SNAPSHOT_DIR, SnapshotError, current_version, read_snapshot
from stages.candidates import CandidateModel
from stages.feature_view import FeatureNames, FeatureView
from stages.pipeline import TwoStageRecommender
from stages.ranker import Ranker

logger = logging.getLogger("recsys")


class IncompatibleModels(RuntimeError):
    """The loaded models or features do not belong together: refuse to serve."""


def stored_ranker(tag: str) -> bentoml.Model:
    """The ranker in the store, or an error that says how to get one."""
    try:
        return bentoml.models.get(tag)
    except NotFound as exc:
        raise IncompatibleModels(
            f"model {tag!r} is not in the BentoML store; train first with `python -m train`"
        ) from exc


def paired_candidates_tag(ranker_tag: str, override: str | None = None) -> str:
    """The candidates model to load: the configured one, or the ranker's partner."""
    return override or stored_ranker(ranker_tag).info.metadata["candidates_tag"]


def in_bentoml_worker() -> bool:
    """True in a worker process `bentoml serve` spawned (`python -m _bentoml_impl.worker.service`)."""
    return Path(sys.argv[0]).match("_bentoml_impl/worker/*.py")


def preflight(ranker_tag: str, candidates_tag: str, feature_store: str | None) -> None:
    """Load everything once and throw it away: raises :class:`IncompatibleModels` if it does not fit."""
    try:
        candidates = bentoml.models.get(candidates_tag)
    except NotFound as exc:
        raise IncompatibleModels(f"candidates model {candidates_tag!r} is not in the BentoML store") from exc
    Runtime(candidates, stored_ranker(ranker_tag), feature_store)


class Runtime:
    """Both models, the live feature view and the pipeline over them."""

    def __init__(
        self,
        candidates_model: bentoml.Model,
        ranker_model: bentoml.Model,
        feature_store: str | None = None,
        n_candidates: int | None = None,
    ) -> None:
        # One BLAS/OpenMP thread per worker: requests are small, workers give the parallelism.
        threadpool_limits(1)
        meta = ranker_model.info.metadata
        self.tags = {"candidates": str(candidates_model.tag), "ranker": str(ranker_model.tag)}
        if meta.get("candidates_tag") != self.tags["candidates"]:
            raise IncompatibleModels(
                f"ranker {self.tags['ranker']} was trained against candidates model "
                f"{meta.get('candidates_tag')}, but {self.tags['candidates']} is loaded; "
                "unset RECSYS_CANDIDATES_TAG or retrain"
            )
        self.ranker_meta = meta
        self.candidates_meta = candidates_model.info.metadata
        self.candidates = CandidateModel.load(Path(candidates_model.path), self.candidates_meta.get("params"))
        self.names = FeatureNames(tuple(meta["features_numeric"]), tuple(meta["features_categorical"]))
        self.ranker = Ranker(bentoml.catboost.load_model(ranker_model), self.names)
        self.feature_source = feature_store or str(Path(candidates_model.path) / MODEL_SNAPSHOT_DIR)
        try:
            view = self.load_view()
        except SnapshotError as exc:
            raise IncompatibleModels(f"feature store {self.feature_source}: {exc}") from exc
        self.pipeline = TwoStageRecommender(
            self.candidates, self.ranker, view, n_candidates or int(meta.get("n_candidates", 100))
        )
        self.refresh_error: str | None = None
        self._failed_version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def view(self) -> FeatureView:
        return self.pipeline.view

    def load_view(self, version: str | None = None) -> FeatureView:
        """Read a snapshot and check it can produce every feature the ranker needs."""
        snapshot = read_snapshot(self.feature_source, version)
        view = FeatureView(
            snapshot.tables, self.candidates.item_ids, self.candidates.als.item_factors, snapshot.version
        )
        missing = view.missing(self.names)
        if missing:
            raise SnapshotError(f"snapshot {snapshot.version} lacks features the ranker needs: {missing}")
        view.prepare(self.names)
        return view

    def refresh_once(self) -> bool:
        """Swap in a newer snapshot if there is one; keep the old one if it is bad."""
        try:
            version = current_version(self.feature_source)
        except SnapshotError as exc:
            self._record_failure(None, str(exc))
            return False
        if version in (self.view.version, self._failed_version):
            return False
        try:
            view = self.load_view(version)
        except (SnapshotError, KeyError, ValueError) as exc:
            self._record_failure(version, str(exc))
            return False
        # One reference assignment: requests in flight keep the pipeline they started with.
        self.pipeline = self.pipeline.with_view(view)
        self.refresh_error = None
        logger.info("feature snapshot %s now serving", version)
        return True

    def _record_failure(self, version: str | None, message: str) -> None:
        if message != self.refresh_error:
            logger.error("feature refresh failed, still serving %s: %s", self.view.version, message)
        self._failed_version = version
        self.refresh_error = message

    def start_refresh(self, every_seconds: float) -> None:
        """Poll the feature store in a daemon thread (0 turns it off)."""
        if every_seconds <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.refresh_once()
                except Exception:  # a refresh bug must never take serving down
                    logger.exception("feature refresh crashed; still serving %s", self.view.version)

        self._thread = threading.Thread(target=loop, name="feature-refresh", daemon=True)
        self._thread.start()

    def stop_refresh(self) -> None:
        self._stop.set()
