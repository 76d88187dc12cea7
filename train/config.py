"""Training configuration: defaults, a TOML/JSON file, then command-line flags."""

from __future__ import annotations

import codecs
import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.schema import DAY, SEPARATORS, ReadOptions
from stages.candidates import CandidateParams
from train.backtest import BacktestParams
from train.engine import CONNECT_TIMEOUT, check_spec
from train.ranker_training import LOSSES, RankerParams


class TrainConfig(BaseModel):
    """The knobs a training run exposes (each a flag and a config key; unknown keys are rejected).

    Knobs only the studies turn (the ranker's prior, how many request items train the request
    rankers, co-consumption's seeds) stay on :class:`RankerParams` and :class:`CandidateParams` at their defaults.
    """

    model_config = ConfigDict(extra="forbid")

    interactions: Path | None = Field(
        None,
        description="interactions file (CSV or parquet: user_id, item_id, timestamp, optional weight); "
        "MovieLens-100K when absent",
    )
    users: Path | None = Field(None, description="optional user attributes file (user_id plus any columns)")
    items: Path | None = Field(
        None, description="optional item attributes file (item_id plus any columns; title shown)"
    )
    events: str | None = Field(
        None, description="event log root (path or pyarrow URI) written by the service: its feedback joins the data"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="rename your files' columns to the schema's, in every file: userId=user_id,movieId=item_id,"
        "rating=weight",
    )
    sep: str | None = Field(None, description="CSV separator: ',', ';' or tab (default: sniffed from the first lines)")
    encoding: str | None = Field(None, description="CSV encoding (default: UTF-8, falling back to Latin-1 with a note)")
    allow_any_dates: bool = Field(
        False, description="accept timestamps before 1990 or after next year (usually a misread unit)"
    )
    seed: int = Field(42, description="random seed of ALS, CatBoost and the user samples")
    factors: int = Field(CandidateParams.factors, ge=1, description="ALS latent factors")
    regularization: float = Field(CandidateParams.regularization, ge=0, description="ALS L2 regularization")
    alpha: float = Field(CandidateParams.alpha, gt=0, description="ALS confidence scale of the weights")
    als_iterations: int = Field(CandidateParams.iterations, ge=1, description="ALS iterations")
    popular_days: int = Field(CandidateParams.popular_days, ge=1, description="window of the popularity source")
    popular_recent_days: int = Field(
        CandidateParams.popular_recent_days,
        ge=0,
        description="a shorter window whose shares the popularity source adds (0: none)",
    )
    popular_user_damping: float = Field(
        CandidateParams.popular_user_damping,
        ge=0,
        le=1,
        description="the popularity source counts a take 1/n**this, n its user's takes in the window (0: plain)",
    )
    n_popular: int = Field(CandidateParams.n_popular, ge=0, description="candidates from recent popularity")
    n_cooc: int = Field(CandidateParams.n_cooc, ge=0, description="candidates from co-consumption")
    loss: str = Field(
        RankerParams.loss, pattern="^(" + "|".join(LOSSES) + ")$", description="CatBoost loss of the ranker"
    )
    ranker_iterations: int = Field(RankerParams.iterations, ge=1, description="CatBoost iterations of the ranker")
    depth: int = Field(RankerParams.depth, ge=1, le=16, description="CatBoost tree depth")
    learning_rate: float = Field(RankerParams.learning_rate, gt=0, description="CatBoost learning rate")
    n_candidates: int = Field(RankerParams.n_candidates, ge=10, le=1000, description="ALS candidates per user")
    label_days: int = Field(
        RankerParams.label_days, ge=1, description="ranker labels: items taken this many days after a cut"
    )
    train_cuts: int = Field(RankerParams.train_cuts, ge=1, description="training cuts stacked for the ranker")
    cut_step_days: float = Field(
        RankerParams.cut_step_days, ge=0.5, le=365, description="days between training cuts (divides 7 or a multiple)"
    )
    backtest_cuts: int = Field(BacktestParams.n_cuts, ge=0, description="backtest cuts (0 skips the backtest)")
    horizon_days: int = Field(BacktestParams.horizon_days, ge=1, description="backtest short horizon, in days")
    fold_iterations: int | None = Field(
        BacktestParams.fold_iterations, ge=1, description="ranker iterations in backtest folds (default: the same)"
    )
    holdout: float = Field(0.2, gt=0, lt=1, description="secondary evaluation: each user's last share held out")
    threads: int = Field(RankerParams.threads, ge=1, description="CatBoost threads")
    max_train_users: int = Field(
        RankerParams.max_users, ge=100, description="users sampled per ranker fit, over all its cuts"
    )
    max_eval_users: int = Field(BacktestParams.max_users, ge=100, description="users sampled for the evaluation")
    engine: str | None = Field(
        None,
        description="build the training cuts on a Dask cluster: 'local' (a worker per core), 'local:N', or a "
        "scheduler's address such as tcp://scheduler:8786 (default: in this process, one cut at a time)",
    )
    engine_timeout: float = Field(
        CONNECT_TIMEOUT,
        gt=0,
        description="seconds --engine's scheduler is tried, and then its first worker awaited, before exit 2 "
        "(minutes when the cluster starts with the training)",
    )
    fail_if_worse_than_baseline: bool = Field(
        False,
        description="exit 2 without saving when the two-stage model loses to a baseline in the backtest "
        "(for scheduled jobs; otherwise a WARNING)",
    )
    feature_store: str = Field("feature_store", description="feature store root (path or pyarrow URI)")
    report_dir: Path = Field(Path("var/reports"), description="where the evaluation report is written")
    save: bool = Field(True, description="save the models and the feature snapshot (--no-save: evaluate only)")

    @field_validator("columns", mode="before")
    @classmethod
    def _mapping(cls, value: object) -> object:
        """``a=b,c=d`` (the flag, or a string in the file) or a table of the same."""
        if not isinstance(value, str):
            return value
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        if any(len(pair) != 2 or not all(p.strip() for p in pair) for pair in pairs):
            raise ValueError(f"expected name=schema_name pairs separated by commas, got {value!r}")
        return {source.strip(): target.strip() for source, target in pairs}

    @field_validator("sep", mode="before")
    @classmethod
    def _separator(cls, value: object) -> object:
        value = {"tab": "\t", "\\t": "\t"}.get(value, value) if isinstance(value, str) else value
        if value is not None and value not in SEPARATORS:
            raise ValueError(f"expected ',', ';' or tab, got {value!r}")
        return value

    @field_validator("cut_step_days")
    @classmethod
    def _on_the_weekly_grid(cls, value: float) -> float:
        """Training cuts on the backtest's weekly grid, so neighbouring folds share their stages and rows."""
        step, week = round(value * DAY), BacktestParams.step_days * DAY
        if week % step and step % week:
            raise ValueError(
                "expected a step that divides 7 days or is a multiple of it (7, 3.5, 1, 0.5, 14, ...): "
                "other steps share no stage between the backtest's weekly folds"
            )
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str | None) -> str | None:
        return value if value is None else check_spec(value)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError as exc:
                raise ValueError(f"unknown encoding {value!r}") from exc
        return value

    def read_options(self) -> ReadOptions:
        """How the loader reads the user's files (mapping, separator, encoding, date range)."""
        return ReadOptions(self.columns, self.sep, self.encoding, self.allow_any_dates)

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
            popular_recent_days=self.popular_recent_days,
            popular_user_damping=self.popular_user_damping,
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


class ConfigError(ValueError):
    """A bad configuration file, key or value; the message names the file (or flag) and the key."""


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or JSON file of :class:`TrainConfig` keys (``ranker_iterations`` or ``ranker-iterations``)."""
    kind = {".toml": "TOML", ".json": "JSON"}.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{path}: unsupported config format '{path.suffix}' (use a .toml or .json file)")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of keys, got {type(values).__name__}")
    return {_known_key(str(key), path): value for key, value in values.items()}


def _known_key(key: str, path: Path) -> str:
    name = key.replace("-", "_")
    if name not in TrainConfig.model_fields:
        close = difflib.get_close_matches(name, list(TrainConfig.model_fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{path}: unknown key '{key}'{hint}")
    return name


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any], path: Path | None = None) -> TrainConfig:
    """Flags over the file over the defaults; a bad value is reported with where it came from."""
    try:
        return TrainConfig(**{**file_values, **flag_values})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            where = f"--{key.replace('_', '-')}" if key in flag_values or path is None else f"{path}: key '{key}'"
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')} (got {error.get('input')!r})")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from exc
