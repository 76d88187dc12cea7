"""The evaluation that mimics deployment: a rolling-origin backtest on global time cuts.

At each cut T everything (candidates, features, the ranker's training
examples) is fitted on interactions before T only; the users active after T
are then scored on what they took next, the whole catalogue ranked and items
they had before T excluded. Warm users (history before T) and cold users
(none) are reported apart, against popularity over all time and over recent
windows, and against ALS alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from features.schema import Columns
from stages.candidates import CandidateParams, popularity_share, ranking
from stages.pipeline import TwoStageRecommender, cold_start_scores
from train.evaluate import K, candidate_recall, pipeline_lists, popularity_lists, ranking_metrics
from train.ranker_training import (
    DAY,
    NotEnoughHistory,
    RankerParams,
    Stage,
    Stages,
    fit_ranker,
    fresh_items,
    sample_users,
)

POPULARITY_WINDOWS = (None, 1, 7, 30)  # days; None = all time
COLD_START_WINDOWS = (*POPULARITY_WINDOWS, 60)  # the cold start may pick any of these ...
SEGMENT_WEIGHTS = (0.0, 0.3, 1.0, 3.0)  # ... and how much the user's segments reorder it
CHANGE_MARGIN = 0.02  # relative NDCG gain an option needs over the defaults to be chosen
TWO_STAGE_MODEL = "two-stage (ALS + CatBoost)"  # its row in the tables (the strategy is "two_stage")
COLD_START = "cold start (served)"


class WorseThanBaseline(ValueError):
    """The two-stage model lost to a baseline in the backtest and the run was asked to fail then."""


@dataclass(frozen=True)
class BacktestParams:
    """Where the cuts fall and how far after each one is scored."""

    n_cuts: int = 3
    horizon_days: int = 14  # the short horizon; "all" (everything after the cut) is always reported too
    fold_iterations: int | None = None  # ranker iterations in the folds; None: the served ranker's own
    max_users: int = 20_000


def popularity_name(days: int | None) -> str:
    return "popular (all time)" if days is None else f"popular (last {days} days)"


def backtest_cuts(interactions: pd.DataFrame, params: BacktestParams, step_days: int = 7) -> list[int]:
    """``n_cuts`` times spread over the last third of the data, the last leaving a full short horizon after it.

    Cuts fall on a grid of ``step_days`` counted back from the last one, the
    grid the ranker's training cuts use too, so folds share their stages.
    """
    times = interactions[Columns.timestamp]
    start, end = int(times.min()), int(times.max()) + 1
    first = start + (end - start) * 2 // 3
    last = end - params.horizon_days * DAY
    if last <= first:
        raise NotEnoughHistory(
            f"the data spans {(end - start) / DAY:.0f} days: too short for a {params.horizon_days}-day horizon "
            "after cuts in its last third"
        )
    step = step_days * DAY
    if params.n_cuts == 1:
        return [last]
    steps_back = np.linspace((last - first) // step, 0, params.n_cuts).round().astype(int)
    return sorted({int(last - n * step) for n in steps_back})  # fewer when the span holds fewer weeks


def run_backtest(stages: Stages, ranker_params: RankerParams, params: BacktestParams, echo: bool = False) -> dict:
    """Every cut, both horizons, warm and cold users: metrics per model, candidate recall, and the means."""
    inter = stages.dataset.interactions
    cuts = backtest_cuts(inter, params, ranker_params.cut_step_days)
    fold_params = replace(ranker_params, iterations=params.fold_iterations or ranker_params.iterations)
    horizons = {f"{params.horizon_days} days": params.horizon_days, "all after the cut": None}
    rows = []
    for cut in cuts:
        stage = stages.at(cut)
        ranker, _ = fit_ranker(stages, cut, fold_params, serve_at=cut, show_progress=False)
        pipeline = TwoStageRecommender(stage.candidates, ranker, stage.view, ranker_params.n_candidates)
        for horizon_name, days in horizons.items():
            end = cut + days * DAY if days else None
            taken = fresh_items(inter, cut, end)
            rows += _score_cut(stage, pipeline, inter, cut, taken, horizon_name, params)
            if echo:
                last = [r for r in rows if r["cut"] == _day(cut) and r["horizon"] == horizon_name]
                print(f"  cut {_day(cut)}, {horizon_name}: " + ", ".join(_summary(r) for r in last), flush=True)
    short = f"{params.horizon_days} days"
    labels = [_day(c) for c in cuts]
    for i, label in enumerate(labels):
        # Out of sample: the cold start served at a cut is the one chosen on the cuts before it.
        choice = choose_cold_start([r for r in rows if r["cut"] in labels[:i]], short)
        for row in rows:
            if row["cut"] == label and row["segment"] == "cold":
                row["models"][COLD_START] = row["cold_start_options"][option_name(*choice)]
                row["cold_start_choice"] = option_name(*choice)
    cold_start = choose_cold_start(rows, short)  # for the model served after the last cut: every cut
    return {
        "cold_start": {"days": cold_start[0], "segment_weight": cold_start[1]},
        "protocol": (
            f"{len(cuts)} global time cuts over the last third of the data; at each, everything fitted on "
            "interactions before the cut; users scored on the new items they took after it "
            f"(within {params.horizon_days} days, and all after); seen items excluded; whole catalogue ranked"
        ),
        "cuts": [_day(c) for c in cuts],
        "k": K,
        "fold_ranker_iterations": fold_params.iterations,
        "rows": rows,
        "mean": summarise(rows),
    }


def _score_cut(
    stage: Stage,
    pipeline: TwoStageRecommender,
    inter: pd.DataFrame,
    cut: int,
    taken: dict[str, set[str]],
    horizon: str,
    params: BacktestParams,
) -> list[dict]:
    candidates = stage.candidates
    warm = sorted(u for u in taken if u in candidates.user_index)
    cold = sorted(u for u in taken if u not in candidates.user_index)
    warm = [str(u) for u in sample_users(np.array(warm, dtype=object), params.max_users, 0)]
    shares = {days: popularity_share(inter, candidates.item_ids, cut, days) for days in COLD_START_WINDOWS}
    out = []
    for segment, users in (("warm", warm), ("cold", cold)):
        if not users:
            continue
        relevant = {u: taken[u] for u in users}
        lists = {
            popularity_name(days): popularity_lists(candidates, shares[days], users) for days in POPULARITY_WINDOWS
        }
        row = {"cut": _day(cut), "horizon": horizon, "segment": segment, "users": len(users)}
        if segment == "warm":
            als_only = TwoStageRecommender(candidates, None, stage.view, pipeline.n_candidates)
            lists["ALS"] = pipeline_lists(als_only, users)
            lists[TWO_STAGE_MODEL] = pipeline_lists(pipeline, users)
            row["candidate_recall"] = candidate_recall(pipeline, users, relevant)
        else:
            row["cold_start_options"] = {
                option_name(days, weight): ranking_metrics(
                    _cold_start_lists(stage, shares[days], weight, users), relevant, candidates.n_items
                )
                for days in COLD_START_WINDOWS
                for weight in SEGMENT_WEIGHTS
            }
        row["models"] = {name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in lists.items()}
        out.append(row)
    return out


def _cold_start_lists(stage: Stage, share: np.ndarray, weight: float, users: list[str]) -> dict[str, list[str]]:
    """What the served cold start would answer with this window and segment weight."""
    out = {}
    for user in users:
        scores, _ = cold_start_scores(stage.view, share, weight, stage.view.stored_attributes(user) if weight else {})
        out[user] = [str(i) for i in stage.candidates.item_ids[ranking(scores)[:K]]]
    return out


def option_name(days: int | None, weight: float) -> str:
    return f"{'all time' if days is None else f'{days} days'}, segment weight {weight:g}"


def choose_cold_start(rows: list[dict], horizon: str) -> tuple[int | None, float]:
    """The cold-start window and segment weight with the best mean NDCG over the rows' cold users at ``horizon``.

    One horizon only: at the last cut the longer horizon is the same window again.
    An option replaces the defaults (the last 30 days, no segment weight) only when it beats them
    by :data:`CHANGE_MARGIN`: a cut has a few dozen cold users, too few to tell smaller gaps apart.
    """
    key = f"ndcg@{K}"
    default = (CandidateParams.cold_start_days, CandidateParams.segment_weight)
    options = [(days, weight) for days in COLD_START_WINDOWS for weight in SEGMENT_WEIGHTS]
    cold = [r for r in rows if r["segment"] == "cold" and r["horizon"] == horizon]
    if not cold:
        return default
    means = {o: np.mean([r["cold_start_options"][option_name(*o)][key] for r in cold]) for o in options}
    best = max(options, key=lambda o: means[o])  # the first of equals, in grid order
    return best if means[best] > means[default] * (1 + CHANGE_MARGIN) else default


def summarise(rows: list[dict]) -> dict:
    """Mean and spread over cuts of NDCG@k, per horizon, segment and model."""
    key = f"ndcg@{K}"
    out: dict = {}
    for row in rows:
        for model, metrics in row["models"].items():
            out.setdefault(row["horizon"], {}).setdefault(row["segment"], {}).setdefault(model, []).append(metrics[key])
    return {
        horizon: {
            segment: {
                model: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_cut": [float(x) for x in v]}
                for model, v in models.items()
            }
            for segment, models in segments.items()
        }
        for horizon, segments in out.items()
    }


def _day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _summary(row: dict) -> str:
    best = max(row["models"].items(), key=lambda kv: kv[1][f"ndcg@{K}"])
    return f"{row['segment']} {row['users']} users, best {best[0]} {best[1][f'ndcg@{K}']:.4f}"


def beaten_by(backtest: dict, horizon: str) -> tuple[str, float, float] | None:
    """The best baseline, its NDCG@k and the two-stage model's, when the baseline won on warm users at ``horizon``."""
    models = backtest.get("mean", {}).get(horizon, {}).get("warm", {})
    if TWO_STAGE_MODEL not in models:
        return None
    ours = models[TWO_STAGE_MODEL]["mean"]
    name, best = max(((m, v["mean"]) for m, v in models.items() if m != TWO_STAGE_MODEL), key=lambda kv: kv[1])
    return (name, best, ours) if best > ours else None
