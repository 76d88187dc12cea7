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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stages.candidates import CandidateParams
from stages.feature_view import FeatureNames
from stages.ranker import Prior

CANDIDATES_MODEL = "recsys-candidates"
RANKER_MODEL = "recsys-ranker"
# 2: several candidate sources, cold-start window. 3: the card as one JSON document (BentoML metadata refuses
# None, which "all time" and other unset values are). 4: the popular source's user damping (a card without it
# would read as damped, 0.5, though its list was made from plain counts). 5: a ranker's prior may read the ALS
# score, raw (code before it would take its log: wrong scores, no error); a version-4 card's prior reads
# popularity alone and is still served as it was. Older models need retraining.
CARD_VERSION = 5
READABLE_CARD_VERSIONS = (4, 5)
CARD_KEY = "card"  # the JSON document's key in the metadata


class CardError(RuntimeError):
    """A model whose metadata this code cannot read (older format, or not ours)."""


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    card_version: int = CARD_VERSION
    dataset: str
    data_fingerprint: str
    trained_at: str

    def to_metadata(self) -> dict[str, Any]:
        """Metadata for ``bentoml.models.create`` / ``save_model``: the version, and the card as one JSON string.

        BentoML's metadata takes only basic types and refuses ``None`` at any
        depth; a JSON document holds every value a card can (``null`` for the
        all-time cold-start window, say), so saving never fails on a value.
        """
        return {"card_version": self.card_version, CARD_KEY: self.model_dump_json()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tag: str = "the model") -> Self:
        """Read a card back; an unknown or missing version is a :class:`CardError`."""
        version = metadata.get("card_version")
        if version not in READABLE_CARD_VERSIONS:
            raise CardError(
                f"{tag} carries model card version {version!r}, this code reads versions "
                f"{', '.join(map(str, READABLE_CARD_VERSIONS))}; "
                "retrain with `python -m train`"
            )
        try:
            return cls.model_validate_json(str(metadata.get(CARD_KEY, "")))
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
    prior: Prior | None = None  # the score the trees were boosted from; serving adds it back
    visitor_prior: Prior | None = None  # the same, for the visitor ranker
    visitor_ranker: bool = False  # whether the folder holds a ranker for visitors with recent items
    # The same for known users' requests with recent items (cards written before it had none: the main ranker
    # ranks those requests, as it did then).
    recent_prior: Prior | None = None
    recent_ranker: bool = False
    n_candidates: int
    evaluation: dict[str, Any]
    timings: dict[str, float]
    # The BLAS kernels and numpy loops training ran (train/kernels.py): a model is reproducible where they are.
    # Empty on cards written before they were recorded.
    kernels: dict[str, Any] = Field(default_factory=dict)
