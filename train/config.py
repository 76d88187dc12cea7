"""Training configuration: defaults, a TOML/JSON file, then command-line flags."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stages.candidates import CandidateParams
from train.backtest import BacktestParams
from train.ranker_training import LOSSES, RankerParams


class TrainConfig(BaseModel):
    """Every knob of a training run; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    interactions: Path | None = Field(None, description="interactions file; MovieLens-100K when absent")
    users: Path | None = Field(None, description="optional user attributes file")
    items: Path | None = Field(None, description="optional item attributes file")
    events: str | None = Field(
        None, description="event log root (path or pyarrow URI) written by the service: its feedback joins the data"
    )
    seed: int = 42
    factors: int = CandidateParams.factors
    regularization: float = CandidateParams.regularization
    alpha: float = CandidateParams.alpha
    als_iterations: int = CandidateParams.iterations
    popular_days: int = Field(CandidateParams.popular_days, ge=1, description="window of the popularity source")
    n_popular: int = Field(CandidateParams.n_popular, ge=0, description="candidates from recent popularity")
    n_cooc: int = Field(CandidateParams.n_cooc, ge=0, description="candidates from co-consumption")
    loss: str = Field(RankerParams.loss, pattern="^(" + "|".join(LOSSES) + ")$")
    ranker_iterations: int = RankerParams.iterations
    depth: int = RankerParams.depth
    learning_rate: float = RankerParams.learning_rate
    n_candidates: int = Field(RankerParams.n_candidates, ge=10, le=1000, description="ALS candidates per user")
    label_days: int = Field(
        RankerParams.label_days, ge=1, description="ranker labels: items taken this many days after a cut"
    )
    train_cuts: int = Field(RankerParams.train_cuts, ge=1, description="training cuts stacked for the ranker")
    cut_step_days: int = Field(RankerParams.cut_step_days, ge=1, description="days between training cuts")
    backtest_cuts: int = Field(BacktestParams.n_cuts, ge=0, description="backtest cuts (0 skips the backtest)")
    horizon_days: int = Field(BacktestParams.horizon_days, ge=1, description="backtest short horizon")
    fold_iterations: int | None = Field(
        BacktestParams.fold_iterations, ge=1, description="ranker iterations in backtest folds (default: the same)"
    )
    holdout: float = Field(0.2, gt=0, lt=1, description="secondary evaluation: each user's last share held out")
    threads: int = Field(RankerParams.threads, ge=1)
    max_train_users: int = Field(RankerParams.max_users, ge=100, description="users sampled per training cut")
    max_eval_users: int = Field(BacktestParams.max_users, ge=100, description="users sampled for the evaluation")
    feature_store: str = Field("feature_store", description="feature store root (path or pyarrow URI)")
    report_dir: Path = Path("var/reports")
    save: bool = True

    @property
    def dataset_name(self) -> str:
        return str(self.interactions) if self.interactions else "MovieLens-100K"

    def candidate_params(self) -> CandidateParams:
        return CandidateParams(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.als_iterations,
            seed=self.seed,
            popular_days=self.popular_days,
            n_popular=self.n_popular,
            n_cooc=self.n_cooc,
        )

    def ranker_params(self) -> RankerParams:
        return RankerParams(
            loss=self.loss,
            iterations=self.ranker_iterations,
            depth=self.depth,
            learning_rate=self.learning_rate,
            n_candidates=self.n_candidates,
            seed=self.seed,
            threads=self.threads,
            max_users=self.max_train_users,
            label_days=self.label_days,
            train_cuts=self.train_cuts,
            cut_step_days=self.cut_step_days,
        )

    def backtest_params(self) -> BacktestParams:
        return BacktestParams(
            n_cuts=self.backtest_cuts,
            horizon_days=self.horizon_days,
            fold_iterations=self.fold_iterations,
            max_users=self.max_eval_users,
        )


def read_config_file(path: Path) -> dict:
    """A TOML or JSON file of :class:`TrainConfig` keys."""
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
