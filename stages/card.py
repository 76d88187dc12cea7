"""The model card: the one contract between training and serving.

Training writes a :class:`CandidatesCard` and a :class:`RankerCard` into the
BentoML model metadata with one call each; serving reads them back with one
call each. Every key either side needs is a typed field here, so a rename is a
type error rather than a ``KeyError`` at start-up, and ``card_version`` lets
an old model fail with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from stages.candidates import CandidateParams
from stages.feature_view import FeatureNames

CANDIDATES_MODEL = "recsys-candidates"
RANKER_MODEL = "recsys-ranker"
CARD_VERSION = 2  # 2: several candidate sources, cold-start window; older models need retraining


class CardError(RuntimeError):
    """A model whose metadata this code cannot read (older format, or not ours)."""


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    card_version: int = CARD_VERSION
    dataset: str
    data_fingerprint: str
    trained_at: str

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON-able metadata for ``bentoml.models.create`` / ``save_model``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tag: str = "the model") -> Self:
        """Read a card back; an unknown or missing version is a :class:`CardError`."""
        version = metadata.get("card_version")
        if version != CARD_VERSION:
            raise CardError(
                f"{tag} carries model card version {version!r}, this code reads version {CARD_VERSION}; "
                "retrain with `python -m train`"
            )
        try:
            return cls.model_validate(dict(metadata))
        except ValidationError as exc:
            raise CardError(f"{tag} has a malformed model card: {exc}") from exc


class CandidatesCard(_Card):
    """What the candidate model was fitted on and with."""

    params: CandidateParams
    n_users: int
    n_items: int
    n_interactions: int


class RankerCard(_Card):
    """The ranker, the candidates model it was trained against, and how well the pair scored."""

    candidates_tag: str
    feature_version: str
    features: FeatureNames
    n_candidates: int
    evaluation: dict[str, Any]
    timings: dict[str, float]
