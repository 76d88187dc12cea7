"""Training the re-ranker the way it is used: as of global cuts, labelled by what came next.

At each training cut T the candidate model and every feature are computed
from interactions before T only (a :class:`Stage`); the labels are the items
each user took in ``[T, T + label_days)`` that they had not taken before T.
Several cuts are stacked for more examples. Serving then asks the same
question: everything up to now is known, what comes next?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from catboost import CatBoost, Pool
from tqdm import tqdm

from features.compute import FeatureTables, compute_features
from features.schema import DAY, Columns, Dataset
from stages.candidates import CandidateBatch, CandidateModel, CandidateParams
from stages.feature_view import FeatureNames, FeatureView
from stages.pipeline import Query, RecentEvent, TwoStageRecommender
from stages.ranker import Ranker

LOSSES = ("YetiRank", "PairLogit", "Logloss")


class NotEnoughHistory(ValueError):
    """The data is too short or too sparse in time for a step: the message says what to change."""


@dataclass(frozen=True)
class RankerParams:
    """CatBoost settings and how its training examples are cut (recorded in the model card)."""

    loss: str = "Logloss"
    iterations: int = 150  # the backtest folds use the same by default, so the backtest measures what is served
    depth: int = 6
    learning_rate: float = 0.05
    n_candidates: int = 100
    seed: int = 42
    threads: int = 2
    max_users: int = 20_000  # users sampled per training cut; bounds the pool's rows on big data
    label_days: int = 14  # what a user takes in this many days after a cut is what the ranker learns to find
    train_cuts: int = 4  # cuts stacked for training, the latest at T - label_days ...
    cut_step_days: int = 7  # ... and each earlier one this many days before the next
    # Examples of requests with recent_items: a user active after a cut passes their first this many
    # interactions after it and is labelled by the new items they took later (0: no such examples).
    fresh_recent: int = 3
    # Their weight against the other examples. A user active after a cut gives many rows with many
    # positives; at full weight they crowd out the plain examples (backtest warm NDCG@10 0.193 -> 0.165 at
    # 1.0, 0.188 at 0.5, 0.195 at 0.2 on MovieLens; train.freshness: recent items +15% at 0.2).
    fresh_weight: float = 0.2


@dataclass
class Stage:
    """The candidate model and the feature view as of one time, built from the interactions before it."""

    candidates: CandidateModel
    view: FeatureView
    tables: FeatureTables


class Stages:
    """Stages built once per time: the backtest's cuts and the final model share them."""

    def __init__(self, dataset: Dataset, params: CandidateParams) -> None:
        self.dataset = dataset
        self.params = params
        self._built: dict[int | None, Stage] = {}

    def at(self, as_of: int | None) -> Stage:
        """The stage as of ``as_of`` (``None``: all the data, for serving)."""
        if as_of not in self._built:
            inter = self.dataset.interactions
            before = inter if as_of is None else inter[inter[Columns.timestamp] < as_of]
            candidates = CandidateModel.fit(before, self.params, as_of)
            tables = compute_features(self.dataset, as_of)
            view = FeatureView(tables, candidates.item_ids, candidates.als.item_factors)
            self._built[as_of] = Stage(candidates, view, tables)
        return self._built[as_of]


def training_cuts(until: int, params: RankerParams) -> list[int]:
    """The cuts whose label windows end by ``until``, oldest first."""
    last = until - params.label_days * DAY
    return [last - params.cut_step_days * DAY * j for j in range(params.train_cuts - 1, -1, -1)]


def fresh_items(interactions: pd.DataFrame, start: int, end: int | None) -> dict[str, set[str]]:
    """Per user, the items taken in ``[start, end)`` that they had not taken before ``start``."""
    times = interactions[Columns.timestamp]
    pair = [Columns.user, Columns.item]
    before = interactions.loc[times < start, pair].drop_duplicates()
    in_window = (times >= start) & (times < end) if end is not None else times >= start
    window = interactions.loc[in_window, pair].drop_duplicates()
    merged = window.merge(before, on=pair, how="left", indicator=True)
    fresh = merged[merged["_merge"] == "left_only"]
    return {user: set(items.tolist()) for user, items in fresh.groupby(Columns.user, sort=True)[Columns.item]}


def fit_ranker(
    stages: Stages, until: int, params: RankerParams, serve_at: int | None, show_progress: bool = True
) -> tuple[Ranker, dict]:
    """Train on the cuts before ``until`` (labels never reach ``until``) for serving the stage at ``serve_at``.

    The ranker's columns are those every training stage and the served stage can produce.
    """
    inter = stages.dataset.interactions
    first = int(inter[Columns.timestamp].min())
    cuts = [t for t in training_cuts(until, params) if t > first]  # a cut needs some history before it
    if not cuts:
        span = (until - first) / DAY
        raise NotEnoughHistory(
            f"the interactions span {span:.1f} days; the ranker learns from what users take in the "
            f"{params.label_days} days after a cut, with history before it: add data or lower --label-days"
        )
    names = common_names([stages.at(serve_at).view, *(stages.at(t).view for t in cuts)])
    examples = [(stages.at(t), fresh_items(inter, t, t + params.label_days * DAY)) for t in cuts]
    recent = [(stages.at(t), recent_examples(inter, t, params)) for t in cuts] if params.fresh_recent else []
    ranker, stats = fit_on_examples(examples, names, params, show_progress, recent)
    return ranker, {"cuts": [datetime.fromtimestamp(t, UTC).isoformat() for t in cuts], **stats}


def fit_on_examples(
    examples: Sequence[tuple[Stage, dict[str, set[str]]]],
    names: FeatureNames,
    params: RankerParams,
    show_progress: bool = True,
    recent: Sequence[tuple[Stage, list[tuple[Query, set[str]]]]] = (),
) -> tuple[Ranker, dict]:
    """Fit CatBoost on each stage's candidates labelled by the items each user took next.

    ``recent`` adds, per stage, requests with recent items and the items their users took after those.
    """
    parts = [_labelled_rows(stage, taken, params, names, position) for position, (stage, taken) in enumerate(examples)]
    parts = [(*p, np.ones(len(p[2]), np.float32)) for p in parts if p is not None]
    position = len(examples)
    for i, (stage, queries) in enumerate(recent):
        rows = _recent_rows(stage, queries, params, names, position + i)
        if rows is not None:
            parts.append((*rows, np.full(len(rows[2]), params.fresh_weight, np.float32)))
    if not parts:
        took = sum(len(taken) for _, taken in examples)
        known = sum(u in stage.candidates.user_index for stage, taken in examples for u in taken)
        raise NotEnoughHistory(
            f"not enough history to train the ranker: over {len(examples)} training cuts, {took} users took a new "
            f"item in the {params.label_days} days after a cut, {known} of them with history before it, and none "
            f"had it among their {params.n_candidates} candidates; need at least 1 (add data, or raise "
            "--label-days, --train-cuts or --n-candidates)"
        )
    numeric_parts, categorical, labels, groups, weights = zip(*parts, strict=True)
    # Column-major from the start: Ranker.data would otherwise copy the whole block to make it so.
    numeric = np.empty((sum(len(p) for p in numeric_parts), len(names.numeric)), dtype=np.float32, order="F")
    np.concatenate(numeric_parts, out=numeric)
    categorical, labels, groups, weights = (np.concatenate(c) for c in (categorical, labels, groups, weights))
    pool = Pool(Ranker.data(names, numeric, categorical), label=labels, group_id=groups, weight=weights)
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
    stats = {
        "rows": int(pool.num_row()),
        "groups": len(np.unique(groups)),
        "positives": int(labels.sum()),
        "feature_importance": {
            name: round(float(value), 3)
            for name, value in sorted(zip(names.all, importance, strict=True), key=lambda kv: -kv[1])
        },
        "params": asdict(params),
    }
    return Ranker(model, names), stats


def common_names(views: Sequence[FeatureView]) -> FeatureNames:
    """The columns every view can produce, in the first view's order."""
    first = views[0].available()
    shared = set.intersection(*(set(v.available().all) for v in views))
    return FeatureNames(
        tuple(n for n in first.numeric if n in shared), tuple(n for n in first.categorical if n in shared)
    )


def _labelled_rows(
    stage: Stage, taken: dict[str, set[str]], params: RankerParams, names: FeatureNames, position: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows for one stage: candidates of users it knows, labelled 1 for the items they took next."""
    candidates = stage.candidates
    labels = {candidates.user_index[u]: items for u, items in taken.items() if u in candidates.user_index}
    users = sample_users(np.array(sorted(labels), dtype=np.int64), params.max_users, params.seed)
    batch = candidates.top_n(users, params.n_candidates)
    hits = [np.isin(candidates.item_ids[c], list(labels[u])) for u, c in zip(users, batch.items, strict=True)]
    # A ranking pool needs each group (user) in one contiguous block, which
    # iterating users in order gives; groups without a positive teach nothing.
    keep = [i for i, h in enumerate(hits) if h.any()]
    if not keep:
        return None
    kept = CandidateBatch.gather([(batch, i) for i in keep])
    pipeline = TwoStageRecommender(candidates, None, stage.view, params.n_candidates)
    numeric, categorical = pipeline.pair_rows(users[keep], kept, names)
    # Group ids unique across stages: the same user at two cuts is two queries.
    groups = np.repeat(users[keep] + (position << 32), [len(c) for c in kept.items])
    return numeric, categorical, np.concatenate([hits[i] for i in keep]).astype(np.float32), groups


def recent_examples(interactions: pd.DataFrame, cut: int, params: RankerParams) -> list[tuple[Query, set[str]]]:
    """Requests as a client with fresh activity sends them, and what each user took next.

    Each user with more than ``fresh_recent`` interactions in the label window
    passes the first ``fresh_recent`` (time order, ties by item) as recent
    items; the label is the new items they took after those. Users unknown
    before the cut are included: that is how an anonymous visitor is served.
    """
    times = interactions[Columns.timestamp]
    window = interactions[(times >= cut) & (times < cut + params.label_days * DAY)]
    window = window.sort_values([Columns.timestamp, Columns.item], kind="stable")
    had = interactions[times < cut].groupby(Columns.user)[Columns.item].agg(set).to_dict()
    out = []
    for user, rows in window.groupby(Columns.user, sort=True):
        if len(rows) <= params.fresh_recent:
            continue
        told, later = rows.iloc[: params.fresh_recent], rows.iloc[params.fresh_recent :]
        label = set(later[Columns.item]) - set(told[Columns.item]) - had.get(user, set())
        if label:
            events = [
                RecentEvent(str(i), int(t), float(w))
                for i, t, w in zip(told[Columns.item], told[Columns.timestamp], told[Columns.weight], strict=True)
            ]
            out.append((Query(str(user), k=params.n_candidates, recent_items=events), label))
    return out


def _recent_rows(
    stage: Stage, examples: list[tuple[Query, set[str]]], params: RankerParams, names: FeatureNames, position: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows for requests with recent items, built by the request path itself."""
    if not examples:
        return None
    pipeline = TwoStageRecommender(stage.candidates, None, stage.view, params.n_candidates)
    queries = [q for q, _ in examples]
    batch, (numeric, categorical) = pipeline.query_rows(queries, names)
    ids = stage.candidates.item_ids
    hits = [np.isin(ids[c], list(label)) for c, (_, label) in zip(batch.items, examples, strict=True)]
    lengths = [len(c) for c in batch.items]
    keep = np.repeat([h.any() for h in hits], lengths)  # groups without a positive teach nothing
    if not keep.any():
        return None
    groups = np.repeat(np.arange(len(queries)) + (position << 32), lengths)
    return numeric[keep], categorical[keep], np.concatenate(hits).astype(np.float32)[keep], groups[keep]


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
