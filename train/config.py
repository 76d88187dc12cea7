"""Training configuration: defaults, a TOML/JSON file, then command-line flags."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stages.candidates import ALSParams
from train.ranker_training import LOSSES, RankerParams


class TrainConfig(BaseModel):
    """Every knob of a training run; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    interactions: Path | None = Field(None, description="interactions file; MovieLens-100K when absent")
    users: Path | None = Field(None, description="optional user attributes file")
    items: Path | None = Field(None, description="optional item attributes file")
    seed: int = 42
    factors: int = ALSParams.factors
    regularization: float = ALSParams.regularization
    alpha: float = ALSParams.alpha
    als_iterations: int = ALSParams.iterations
    loss: str = Field(RankerParams.loss, pattern="^(" + "|".join(LOSSES) + ")$")
    ranker_iterations: int = RankerParams.iterations
    depth: int = RankerParams.depth
    learning_rate: float = RankerParams.learning_rate
    n_candidates: int = Field(RankerParams.n_candidates, ge=10, le=1000)
    holdout: float = Field(RankerParams.holdout, gt=0, lt=1)
    recent_days: int = Field(30, ge=1)
    threads: int = Field(RankerParams.threads, ge=1)
    max_train_users: int = Field(RankerParams.max_users, ge=100, description="users sampled for ranker training")
    max_eval_users: int = Field(20_000, ge=100, description="users sampled for the evaluation")
    feature_store: str = Field("feature_store", description="feature store root (path or pyarrow URI)")
    report_dir: Path = Path("var/reports")
    save: bool = True

    @property
    def dataset_name(self) -> str:
        return str(self.interactions) if self.interactions else "MovieLens-100K"

    def als_params(self) -> ALSParams:
        return ALSParams(self.factors, self.regularization, self.alpha, self.als_iterations, self.seed)

    def ranker_params(self) -> RankerParams:
        return RankerParams(
            self.loss,
            self.ranker_iterations,
            self.depth,
            self.learning_rate,
            self.n_candidates,
            self.holdout,
            self.seed,
            self.threads,
            self.max_train_users,
        )


def read_config_file(path: Path) -> dict:
    """A TOML or JSON file of :class:`TrainConfig` keys."""
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
