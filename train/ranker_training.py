"""Training the re-ranker on an earlier window, labelled by the next one."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from catboost import CatBoost, Pool
from tqdm import tqdm

from features.compute import compute_features
from features.schema import Columns, Dataset
from stages.candidates import ALSParams, CandidateModel
from stages.feature_view import FeatureNames, FeatureView
from stages.pipeline import TwoStageRecommender
from stages.ranker import Ranker
from train.evaluate import temporal_split

LOSSES = ("YetiRank", "PairLogit", "Logloss")


@dataclass(frozen=True)
class RankerParams:
    """CatBoost settings (recorded in the ranker's metadata)."""

    loss: str = "Logloss"
    iterations: int = 300
    depth: int = 6
    learning_rate: float = 0.05
    n_candidates: int = 100
    holdout: float = 0.2
    seed: int = 42
    threads: int = 2
    max_users: int = 20_000  # users sampled for the training pool; bounds its rows on big data


def build_stage(dataset: Dataset, als: ALSParams, recent_days: int) -> tuple[CandidateModel, FeatureView]:
    """ALS plus a feature view, both from the same interactions only."""
    candidates = CandidateModel.fit(dataset.interactions, als)
    tables = compute_features(dataset, recent_days)
    return candidates, FeatureView(tables, candidates.item_ids, candidates.als.item_factors)


def fit_ranker(
    dataset: Dataset, als: ALSParams, params: RankerParams, recent_days: int, show_progress: bool = True
) -> tuple[Ranker, dict]:
    """Train the ranker: features from before the cut, labels after it.

    The cut is per user (each user's last ``holdout`` share of the given
    interactions), the same rule as the evaluation split.
    """
    before, after = temporal_split(dataset.interactions, params.holdout)
    candidates, view = build_stage(Dataset(before, dataset.users, dataset.items), als, recent_days)
    return fit_ranker_on_stage(candidates, view, before, after, params, show_progress)


def fit_ranker_on_stage(
    candidates: CandidateModel,
    view: FeatureView,
    before: pd.DataFrame,
    after: pd.DataFrame,
    params: RankerParams,
    show_progress: bool = True,
) -> tuple[Ranker, dict]:
    """Train on candidates from a stage fitted on ``before``, labelled by ``after``."""
    names = view.available()
    pool = training_pool(candidates, view, names, before, after, params)
    model = CatBoost(catboost_params(params))
    with tqdm(
        total=params.iterations,
        desc=f"ranker ({params.loss})",
        unit="it",
        leave=False,
        disable=None if show_progress else True,  # None: only on a terminal
    ) as bar:
        model.fit(pool, callbacks=[_Progress(bar)])
    importance = model.get_feature_importance(pool, type="PredictionValuesChange")
    label = pool.get_label()
    stats = {
        "rows": int(pool.num_row()),
        "groups": len(np.unique(pool.get_group_id_hash())),
        "positives": int(np.sum(np.asarray(label, dtype=np.float32))),
        "feature_importance": {
            name: round(float(value), 3)
            for name, value in sorted(zip(names.all, importance, strict=True), key=lambda kv: -kv[1])
        },
        "params": asdict(params),
    }
    return Ranker(model, names), stats


def catboost_params(params: RankerParams) -> dict:
    """CatBoost settings for a :class:`RankerParams`."""
    return {
        "loss_function": params.loss,
        "iterations": params.iterations,
        "depth": params.depth,
        "learning_rate": params.learning_rate,
        "random_seed": params.seed,
        "thread_count": params.threads,
        # One level of categorical combinations: most of the gain, a fraction of the time.
        "max_ctr_complexity": 1,
        "verbose": False,
        "allow_writing_files": False,
    }


def training_pool(
    candidates: CandidateModel,
    view: FeatureView,
    names: FeatureNames,
    before: pd.DataFrame,
    after: pd.DataFrame,
    params: RankerParams,
) -> Pool:
    """(user, candidate) rows labelled 1 when the user took the item after the cut.

    At most ``params.max_users`` users (a seeded sample) contribute rows.
    """
    seen = before.groupby(Columns.user)[Columns.item].agg(set)
    labels = {
        candidates.user_index[u]: set(items) - seen.get(u, set())
        for u, items in after.groupby(Columns.user)[Columns.item]
        if u in candidates.user_index
    }
    users = np.array(sorted(u for u, items in labels.items() if items), dtype=np.int64)
    users = sample_users(users, params.max_users, params.seed)
    batch = candidates.top_n(users, params.n_candidates)
    hits = [np.isin(candidates.item_ids[c], list(labels[u])) for u, c in zip(users, batch.items, strict=True)]
    # A ranking pool needs each group (user) in one contiguous block, which
    # iterating users in order gives; groups without a positive teach nothing.
    keep = [i for i, h in enumerate(hits) if h.any()]
    users = users[keep]
    items = [batch.items[i] for i in keep]
    pipeline = TwoStageRecommender(candidates, None, view, params.n_candidates)
    numeric, categorical = pipeline.pair_rows(users, items, [batch.scores[i] for i in keep], names)
    return Pool(
        Ranker.data(names, numeric, categorical),
        label=np.concatenate([hits[i] for i in keep]).astype(np.float32),
        group_id=np.repeat(users, [len(c) for c in items]),
    )


def sample_users(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of at most ``limit`` users (all of them when fewer)."""
    if len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))


class _Progress:
    """CatBoost callback that advances a progress bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def after_iteration(self, info: object) -> bool:
        self.bar.update(1)
        return True
