"""Request and response bodies of the HTTP API (pydantic, strict).

The API's limits are the constants below, not settings: the OpenAPI schema
documents them, so changing one is a change of the API.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from features.schema import NULL_SPELLINGS, id_text

MAX_K = 100
MAX_BATCH = 100
MAX_EXCLUDED = 1000
MAX_RECENT = 100
MAX_FEEDBACK = 500  # events per /feedback call
MAX_ID_CHARS = 256
MAX_ATTRIBUTE_CHARS = 64
MAX_OFFSET = 1000
MAX_FILTERS = 16  # attributes per request
MAX_FILTER_VALUES = 100  # values per include or exclude list
MAX_NUMBER = 10**18  # the largest magnitude of a numeric attribute or filter bound, as of an integer id
# Unix seconds, 2100-01-01: a larger timestamp is a unit mistake (milliseconds) that training would misread.
MAX_TIMESTAMP = 4_102_444_800
# Feedback dates follow training's rule (features/schema.py::date_range): 0 or a date decades away would stretch the
# retrained data's span and move every backtest cut. A day ahead of the server's clock is allowed for skew.
MIN_FEEDBACK_TIMESTAMP = 631_152_000  # 1990-01-01
FUTURE_SKEW_SECONDS = 86_400
MIN_WEIGHT = 1e-6


def _api_id(value: object) -> str:
    """Ids arrive as JSON strings or integers; they become text by the data's rule (:func:`id_text`)."""
    if isinstance(value, bool):
        raise ValueError("an id must be a string or an integer, not a boolean")
    if not isinstance(value, str | int):
        raise ValueError("an id must be a string or an integer")
    if isinstance(value, int) and abs(value) > MAX_NUMBER:  # the documented range (a fuzzer keeps to it)
        raise ValueError(f"an integer id must be within ±{MAX_NUMBER:.0e}")
    text = id_text(value)
    if not text:
        raise ValueError("an id must not be empty")
    if len(text) > MAX_ID_CHARS:
        raise ValueError(f"an id must be at most {MAX_ID_CHARS} characters")
    if _CONTROL.search(text):
        raise ValueError("an id must not contain control characters")
    return text


# One character that str.strip() keeps (not str.isspace()): an id of only whitespace is empty.
# Spelled out because JSON Schema's \s (ECMA) and Python's whitespace differ (\x1c-\x1f, \x85).
NOT_ONLY_WHITESPACE = r"[^\s\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# Control characters (C0, DEL, C1) have no place in an id that is echoed back and logged.
CONTROL = r"\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{CONTROL}]")
ID_PATTERN = f"^[^{CONTROL}]*{NOT_ONLY_WHITESPACE[:-1]}{CONTROL}][^{CONTROL}]*$"

# The documented schema says what the validator enforces, so clients and fuzzers agree with it.
Id = Annotated[
    str,
    BeforeValidator(_api_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": ID_PATTERN},
                {"type": "integer", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
            ]
        }
    ),
]
TopK = Annotated[StrictInt, Field(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")]


def _logged_id(value: object) -> str:
    """An id that goes into the event log, and so into training: not a spelling training reads as missing."""
    text = _api_id(value)
    if text.lower() in NULL_SPELLINGS:
        raise ValueError(f"an id must not be {text!r}: training reads it as missing (null, none, nan, n/a, <na>)")
    return text


LoggedId = Annotated[
    str,
    BeforeValidator(_logged_id),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_CHARS,
                    "pattern": ID_PATTERN,
                    "description": "not null, none, nan, n/a or <na> (any case): training reads those as missing",
                },
                {"type": "integer", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
            ]
        }
    ),
]
# Positive, and large enough to stay positive as the float32 the log and the models keep (1e-300 would be 0).
Weight = Annotated[
    float, Field(ge=MIN_WEIGHT, le=1e6, allow_inf_nan=False, strict=True, description="as in training data")
]


def _attribute(value: object) -> str | int | float | None:
    """A user attribute value: a short string, a finite number or null (no booleans, NaN or infinities)."""
    if value is None:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= MAX_NUMBER:
        return value  # NaN fails the comparison; a 400-digit integer is compared exactly, no float overflow
    if isinstance(value, str) and len(value) <= MAX_ATTRIBUTE_CHARS:
        return value
    raise ValueError(
        f"an attribute value must be a string of at most {MAX_ATTRIBUTE_CHARS} characters, a number within "
        f"±{MAX_NUMBER:.0e} or null"
    )


Attribute = Annotated[
    str | int | float | None,
    PlainValidator(_attribute),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_ATTRIBUTE_CHARS},
                {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
                {"type": "null"},
            ]
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecentItem(_Strict):
    """An interaction the model may not hold yet (since training, or in this session)."""

    item_id: Id
    timestamp: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_TIMESTAMP,
        description="unix seconds (not milliseconds); absent: now. Ages are counted from the model's data end, "
        "never below 0",
    )
    weight: Weight = 1.0


def _recent_item(value: object) -> object:
    """A bare id is shorthand for ``{"item_id": id}``."""
    return {"item_id": value} if isinstance(value, str | int) and not isinstance(value, bool) else value


Recent = Annotated[RecentItem, BeforeValidator(_recent_item)]


def _filter_value(value: object) -> object:
    """An integer as the data's text; both bounded as ids are (a 400 echoes what it refuses, so an unbounded value
    made an error answer four times its request). Anything else goes on to the strict string check."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_NUMBER:
            raise ValueError(f"an integer filter value must be within ±{MAX_NUMBER:.0e}")
        return id_text(value)
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters",
            {"max_length": MAX_ID_CHARS},
        )
    return value


Value = Annotated[
    str,
    BeforeValidator(_filter_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_ID_CHARS},
                {"type": "integer", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
            ]
        }
    ),
]
# Bounded, not just finite: pydantic's finiteness check raises OverflowError (a 500) on a 400-digit integer.
Bound = Annotated[
    StrictFloat | StrictInt,
    Field(ge=-MAX_NUMBER, le=MAX_NUMBER),
    WithJsonSchema({"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}),
]


class AttributeFilter(_Strict):
    """A rule on one item attribute: ``include`` (any of) and ``exclude`` (none of) values, or a numeric range."""

    include: list[Annotated[Value, Field(strict=True)]] | None = Field(
        None, min_length=1, max_length=MAX_FILTER_VALUES, description="categorical or list attributes: any of these"
    )
    exclude: list[Annotated[Value, Field(strict=True)]] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, description="categorical or list attributes: none of these"
    )
    gte: Bound | None = Field(None, description="numeric attributes: at least")
    gt: Bound | None = Field(None, description="numeric attributes: more than")
    lte: Bound | None = Field(None, description="numeric attributes: at most")
    lt: Bound | None = Field(None, description="numeric attributes: less than")


Filters = Annotated[
    dict[Annotated[str, Field(max_length=MAX_ATTRIBUTE_CHARS)], AttributeFilter],
    Field(
        default_factory=dict,
        max_length=MAX_FILTERS,
        description='item attribute -> rule, all must hold, e.g. {"genres": {"include": ["Comedy"]}, '
        '"release_year": {"gte": 1990}}; unknown attributes or values are a 400',
    ),
]


class RecommendRequest(_Strict):
    """Who to recommend for and how many."""

    model_config = ConfigDict(
        extra="forbid",
        # BentoML's OpenAPI schema takes a single "example" (not "examples").
        json_schema_extra={"example": {"user_id": "196", "k": 10, "exclude_seen": True, "exclude_items": []}},
    )

    user_id: Id
    k: TopK = 10
    exclude_seen: StrictBool = True
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDED)
    user_attributes: dict[Annotated[str, Field(max_length=MAX_ATTRIBUTE_CHARS)], Attribute] = Field(
        default_factory=dict,
        max_length=32,
        description="attributes of a user the model has not seen, to pick a better fallback",
    )
    recent_items: list[Recent] = Field(
        default_factory=list,
        max_length=MAX_RECENT,
        description=(
            "the user's interactions the model has not seen (ids, or objects with item_id, timestamp, weight): "
            "both stages use them, and with exclude_seen they are not recommended"
        ),
    )
    filters: Filters
    offset: StrictInt = Field(0, ge=0, le=MAX_OFFSET, description="skip this many items: the next page of a ranking")
    diversity: Annotated[
        StrictFloat | StrictInt,
        # Spelled out: pydantic leaves a union's bounds out of the schema, and clients and fuzzers read the schema.
        WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
    ] = Field(
        0.0, ge=0, le=1, description="0..1: re-rank for variety (maximal marginal relevance); 0 leaves the ranking"
    )
    explain: StrictBool = Field(False, description="each item says why: `because` (your items) and `reasons`")
    session_id: Id | None = Field(
        None,
        description=(
            "a visitor without an account: an online experiment assigns the arm by it instead of user_id "
            "(send the same one for the whole visit; a signed-in user sends none and keeps an arm across devices)"
        ),
    )
    # QA: the experiment arm to answer from, from the X-Recsys-Arm header (serving/experiments.py); not a
    # body field, so the public schema has no knob whose valid values are data.
    _arm: str | None = PrivateAttr(None)

    @property
    def forced_arm(self) -> str | None:
        return self._arm

    def force_arm(self, arm: str | None) -> RecommendRequest:
        self._arm = arm
        return self


def query_cost(query: RecommendRequest) -> float:
    """A query's pipeline work in units of a plain one, for the batcher's estimate of the work waiting.

    Measured in-process on MovieLens-100K, one thread, calls of 100 queries (2026-12-07, with the numpy trees
    for explanations): a plain query 0.61 ms (0.65 at k = 50); 100 recent items add 0.39 ms; ``explain`` adds
    0.37 ms plus 0.021 ms per item. Only the ratios matter: the batcher learns the seconds per unit from its
    own calls.
    """
    cost = 1.0 + 0.6 * len(query.recent_items) / 100
    if query.explain:
        cost += 0.6 + query.k / 30
    return cost


class BecauseItem(BaseModel):
    item_id: str
    title: str | None = None


def _is_none(value: object) -> bool:
    return value is None


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int = Field(description="place in the whole ranking, from 1: a page at offset 10 starts at 11")
    title: str | None = None
    # Without ``explain`` an item is what it always was: no ``because``/``reasons`` keys.
    because: list[BecauseItem] | None = Field(
        None, description="with explain: the user's items closest to this one", exclude_if=_is_none
    )
    reasons: list[str] | None = Field(
        None, description="with explain: the ranker's main reasons, in words", exclude_if=_is_none
    )
    team: Literal["a", "b"] | None = Field(
        None, description="in an interleaving arm: which of its two models placed the item", exclude_if=_is_none
    )


class ModelTags(BaseModel):
    candidates: str
    ranker: str


class ExperimentArm(BaseModel):
    """The experiment and arm that answered (serving/experiments.py)."""

    name: str
    arm: str
    share: float = Field(description="share of users the arm serves")
    forced: bool = Field(False, description="the request named the arm (QA); reports count such answers apart")
    session_id: str | None = Field(
        None, description="the request's session_id, which chose the arm instead of user_id", exclude_if=_is_none
    )
    shadow: bool = Field(False, description="a shadow list: logged, never shown", exclude_if=lambda shadow: not shadow)


class ExperimentArmInfo(BaseModel):
    name: str
    share: float
    model: ModelTags
    interleaved_with: ModelTags | None = None  # an interleaving arm's second model (team b; ``model`` is team a)
    strategy: Literal["popular"] | None = None  # a baseline arm: popularity for everyone, from ``model``'s snapshot


class ExperimentInfo(BaseModel):
    """The experiment served, or why the experiments file was refused (the previous experiment stays)."""

    name: str | None
    arms: list[ExperimentArmInfo]
    error: str | None = None


class RecommendResponse(BaseModel):
    """The reference design's envelope: recommendations, status, message."""

    user_id: str
    recommendations: list[RecommendedItem]
    status: Literal["success", "error"] = "success"
    message: str | None = None
    strategy: Literal["two_stage", "popular"] | None = None
    model: ModelTags | None = None
    request_id: str | None = Field(None, description="send it back with /feedback to join what was taken to this list")
    # Left out of an answer outside an experiment: answers keep the shape they had before experiments.
    experiment: ExperimentArm | None = Field(
        None, description="the experiment arm that answered, when one runs", exclude_if=_is_none
    )


class BatchRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"requests": [{"user_id": "196", "k": 3}, {"user_id": "1", "k": 3}]}},
    )

    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    results: list[RecommendResponse]
    status: Literal["success", "error"] = "success"
    message: str | None = None


class SimilarItemsRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"item_id": "50", "k": 5}})

    item_id: Id
    k: TopK = 10
    filters: Filters


class SimilarItemsResponse(BaseModel):
    item_id: str
    recommendations: list[RecommendedItem]
    status: Literal["success", "error"] = "success"
    message: str | None = None
    model: ModelTags | None = None


class FeedbackEvent(_Strict):
    """Something a user did with an item: taken, clicked, rated."""

    user_id: LoggedId
    item_id: LoggedId
    timestamp: StrictInt | None = Field(
        None,
        ge=MIN_FEEDBACK_TIMESTAMP,
        le=MAX_TIMESTAMP,
        description="unix seconds (not milliseconds), from 1990 to a day from now; absent: when the server received it",
    )
    weight: Weight = 1.0
    type: str | None = Field(None, max_length=32, pattern=r"^[a-z][a-z0-9_]*$", description="click, watch, rating...")
    request_id: str | None = Field(
        None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the request_id of the list it was taken from"
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_the_future(cls, value: int | None) -> int | None:
        if value is not None and value > time.time() + FUTURE_SKEW_SECONDS:
            # A bound that moves with the clock: the document's maximum cannot state it, so it has its own type.
            raise PydanticCustomError(
                "timestamp_in_future", "is in the future: give unix seconds of when it happened (or leave it out)"
            )
        return value


class FeedbackRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"events": [{"user_id": "196", "item_id": "242", "weight": 4, "type": "rating"}]}
        },
    )

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_FEEDBACK)

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        """A single event is shorthand for ``{"events": [event]}``."""
        return {"events": [value]} if isinstance(value, dict) and "events" not in value else value


class FeedbackResponse(BaseModel):
    accepted: int
    status: Literal["success", "error"] = "success"
    message: str | None = None


class ModelInfo(BaseModel):
    """What is being served and how well it scored offline."""

    model: ModelTags
    trained_at: str
    data_fingerprint: str
    dataset: str
    n_users: int
    n_items: int
    n_candidates: int
    feature_version: str
    feature_source: str
    feature_refresh_error: str | None = None
    hidden_items_error: str | None = None  # why hidden_items.txt cannot be read (the previous list stays served)
    features: list[str]
    evaluation: dict
    kernels: dict = {}  # the BLAS kernels and numpy loops training ran: where the model is reproducible
    experiment: ExperimentInfo | None = None  # the online experiment served (serving/experiments.py), if any
