"""The experiments file: what it may declare, and reading it (an experiment that cannot be served says why).

See :mod:`serving.experiments` for what an experiment does with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EXPERIMENTS_FILE = "experiments.json"
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


def file_stamp(path: Path | None) -> tuple[tuple[int, bytes] | None, bytes | None]:
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


def experiments_path(setting: str | None, feature_source: str) -> Path | None:
    """The experiments file: the setting, else ``experiments.json`` at a local feature store's root."""
    if setting:
        return Path(setting)
    if "://" in feature_source:
        return None
    return Path(feature_source) / EXPERIMENTS_FILE
