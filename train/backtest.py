"""The evaluation that mimics deployment: a rolling-origin backtest on global time cuts across the history.

At each cut T everything (candidates, features, the ranker's training
examples, the cold-start choice) is fitted on interactions before T only; the
users active after T are then scored on what they took next, the whole
catalogue ranked and items they had before T excluded. The cuts fall every
week over the second half of the data (at most ``n_cuts`` of them, spread
evenly), so a model must win across periods, not on the last few weeks. Warm
users (history before T) and cold users (none) are reported apart, against
popularity over all time and over recent windows, and against ALS alone, with
the number of cuts won and a paired 95% interval of the ratio to the best
popularity list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from features.schema import DAY, Columns, Dataset
from stages.candidates import CandidateParams, popularity_share, ranking
from stages.cold_start import cold_start_scores
from stages.pipeline import TwoStageRecommender
from stages.ranker import Ranker
from train.evaluate import K, candidate_recall, ndcg_per_user, pipeline_lists, popularity_lists, ranking_metrics
from train.ranker_training import (
    NotEnoughHistory,
    RankerParams,
    Stage,
    Stages,
    build_stage,
    cuts_with_history,
    fit_ranker,
    fresh_items,
    sample_users,
    training_cuts,
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

    n_cuts: int = 16  # at most; every week of the second half when it holds fewer (14 on MovieLens-100K)
    horizon_days: int = 14  # the short horizon; "all" (everything after the cut) is always reported too
    step_days: int = 7  # between neighbouring cuts; the ranker's training cuts fall on a grid that divides it
    fold_iterations: int | None = None  # ranker iterations in the folds; None: the served ranker's own
    max_users: int = 20_000


def popularity_name(days: int | None) -> str:
    return "popular (all time)" if days is None else f"popular (last {days} days)"


def backtest_cuts(interactions: pd.DataFrame, params: BacktestParams) -> list[int]:
    """Cuts every ``params.step_days`` over the second half of the data, the last leaving a full short horizon after it.

    At most ``n_cuts``, spread evenly over that grid when it holds more. The
    grid is counted back from the last cut, the grid the ranker's training
    cuts use too, so folds share their stages and training rows.
    """
    times = interactions[Columns.timestamp]
    start, end = int(times.min()), int(times.max()) + 1
    first = start + (end - start) // 2
    last = end - params.horizon_days * DAY
    if last <= first:
        raise NotEnoughHistory(
            f"the data spans {(end - start) / DAY:.0f} days: too short for a {params.horizon_days}-day horizon "
            "after cuts in its second half"
        )
    step = params.step_days * DAY
    if params.n_cuts == 1:
        return [last]
    weeks = (last - first) // step  # grid points after the first: last - weeks * step >= first
    steps_back = np.linspace(weeks, 0, min(params.n_cuts, weeks + 1)).round().astype(int)
    return sorted({int(last - n * step) for n in steps_back})


def run_backtest(
    stages: Stages, ranker_params: RankerParams, params: BacktestParams, echo: bool = False
) -> dict[str, Any]:
    """Every cut, both horizons, warm and cold users: metrics per model, candidate recall, the summary."""
    inter = stages.dataset.interactions
    cuts = backtest_cuts(inter, params)
    fold_params = replace(ranker_params, iterations=params.fold_iterations or ranker_params.iterations)
    folds: Iterator[list[dict[str, Any]]]
    if stages.engine is None:
        folds = _folds_here(stages, cuts, fold_params, params)
    else:
        folds = _folds_on_engine(stages, cuts, fold_params, params)
    rows: list[dict[str, Any]] = []
    for fold in folds:
        rows += fold
        if echo:
            for horizon in dict.fromkeys(r["horizon"] for r in fold):
                shown = ", ".join(_summary(r) for r in fold if r["horizon"] == horizon)
                print(f"  cut {fold[0]['cut']}, {horizon}: {shown}", flush=True)
    short = f"{params.horizon_days} days"
    for cut in cuts:
        choice = choose_cold_start(rows_known_at(rows, cuts, cut, params.horizon_days), short)
        for row in rows:
            if row["cut"] == cut_label(cut) and row["segment"] == "cold":
                row["models"][COLD_START] = row["cold_start_options"][option_name(*choice)]
                row["per_user"][COLD_START] = row["cold_start_per_user"][option_name(*choice)]
                row["cold_start_choice"] = option_name(*choice)
    cold_start = choose_cold_start(rows, short)  # for the model served after the last cut: every cut
    return {
        "cold_start": {"days": cold_start[0], "segment_weight": cold_start[1]},
        "protocol": (
            f"{len(cuts)} global time cuts, weekly over the second half of the data; at each, everything fitted "
            "on interactions before the cut; users scored on the new items they took after it "
            f"(within {params.horizon_days} days, and all after); seen items excluded; whole catalogue ranked"
        ),
        "cuts": [cut_label(c) for c in cuts],
        "k": K,
        "fold_ranker_iterations": fold_params.iterations,
        "rows": rows,
        "mean": summarise(rows),
        "summary": compare(rows),
    }


def fitted_folds(
    stages: Stages, cuts: list[int], params: RankerParams
) -> Iterator[tuple[int, Stage, TwoStageRecommender]]:
    """Per cut, the stage and the pipeline fitted on the interactions before it: what that cut is scored with.

    Stages and training rows no later fold trains on are let go as the folds advance (rows stay with
    ``Stages(keep_rows=True)``).
    """
    for position, cut in enumerate(cuts):
        # The ranker first: its training cuts' stages are built and let go in turn, and the stage it is scored
        # on is built last, so it is still held when the next fold trains on its rows.
        ranker, _ = fit_ranker(stages, cut, params, serve_at=cut, show_progress=False)
        stage = stages.at(cut)
        yield cut, stage, TwoStageRecommender(stage.candidates, ranker, stage.view, params.n_candidates)
        del stage  # not alive through the next fold's builds unless the cache holds it
        if position + 1 < len(cuts):
            stages.forget_before(training_cuts(cuts[position + 1], params)[0])


def _folds_here(
    stages: Stages, cuts: list[int], fold_params: RankerParams, params: BacktestParams
) -> Iterator[list[dict[str, Any]]]:
    """The folds built and scored in this process, one after the other. A fold's stage and pipeline are let go
    before the next fold builds its stages (a generator expression's names had kept them through its builds)."""
    inter = stages.dataset.interactions
    for cut, stage, pipeline in fitted_folds(stages, cuts, fold_params):
        rows = _fold_rows(stage, pipeline, inter, cut, params)
        del stage, pipeline
        yield rows


def _fold_rows(
    stage: Stage, pipeline: TwoStageRecommender, inter: pd.DataFrame, cut: int, params: BacktestParams
) -> list[dict[str, Any]]:
    """One fold's rows: both horizons, warm and cold users."""
    horizons = {f"{params.horizon_days} days": params.horizon_days, "all after the cut": None}
    rows = []
    for horizon_name, days in horizons.items():
        taken = fresh_items(inter, cut, cut + days * DAY if days else None)
        rows += _score_cut(stage, pipeline, inter, cut, taken, horizon_name, params)
    return rows


def score_fold(
    dataset: Dataset, candidates: CandidateParams, cut: int, ranker: Ranker, n_candidates: int, params: BacktestParams
) -> list[dict[str, Any]]:
    """One fold scored where its stage is built, with the ranker fitted for it (an engine's task)."""
    stage = build_stage(dataset, candidates, cut)
    pipeline = TwoStageRecommender(stage.candidates, ranker, stage.view, n_candidates)
    return _fold_rows(stage, pipeline, dataset.interactions, cut, params)


def _folds_on_engine(
    stages: Stages, cuts: list[int], fold_params: RankerParams, params: BacktestParams
) -> Iterator[list[dict[str, Any]]]:
    """The folds with an engine: every training cut's rows and every cut's columns built on its workers at once,
    the rankers fitted here in turn, each fold scored on a worker while the next ranker fits."""
    engine = stages.engine
    assert engine is not None
    training = sorted({t for cut in cuts for t in cuts_with_history(stages, cut, fold_params)})
    stages.prepare_rows(training, fold_params, names_at=cuts)
    scored = []
    for position, cut in enumerate(cuts):
        ranker, _ = fit_ranker(stages, cut, fold_params, serve_at=cut, show_progress=False)
        scored.append(
            engine.submit(score_fold, stages.dataset, stages.params, cut, ranker, fold_params.n_candidates, params)
        )
        if position + 1 < len(cuts):
            stages.forget_before(training_cuts(cuts[position + 1], fold_params)[0])
    for fold in scored:
        yield fold.result()


def rows_known_at(rows: list[dict[str, Any]], cuts: list[int], cut: int, horizon_days: int) -> list[dict[str, Any]]:
    """The rows of the cuts whose short horizon ended by ``cut``: all a choice made at ``cut`` may read.

    Cuts are a week apart and the horizon two weeks long: the previous cut's
    scores read interactions after this cut, so they are not known yet.
    """
    known = {cut_label(c) for c in cuts_known_at(cuts, cut, horizon_days)}
    return [r for r in rows if r["cut"] in known]


def cuts_known_at(cuts: list[int], cut: int, horizon_days: int) -> list[int]:
    """The cuts whose short horizon had ended by ``cut``: the only scores a choice made at ``cut`` may read."""
    return [c for c in cuts if c + horizon_days * DAY <= cut]


def _score_cut(
    stage: Stage,
    pipeline: TwoStageRecommender,
    inter: pd.DataFrame,
    cut: int,
    taken: dict[str, set[str]],
    horizon: str,
    params: BacktestParams,
) -> list[dict[str, Any]]:
    candidates = stage.candidates
    warm = sorted(u for u in taken if u in candidates.user_index)
    cold = sorted(u for u in taken if u not in candidates.user_index)
    warm = [str(u) for u in sample_users(np.array(warm, dtype=object), params.max_users, 0)]
    shares = cut_shares(inter, candidates.item_ids, cut)
    out = []
    for segment, users in (("warm", warm), ("cold", cold)):
        if not users:
            continue
        relevant = {u: taken[u] for u in users}
        lists = {
            popularity_name(days): popularity_lists(candidates, shares[days], users) for days in POPULARITY_WINDOWS
        }
        row = {"cut": cut_label(cut), "horizon": horizon, "segment": segment, "users": len(users)}
        if segment == "warm":
            als_only = TwoStageRecommender(candidates, None, stage.view, pipeline.n_candidates)
            lists["ALS"] = pipeline_lists(als_only, users)
            lists[TWO_STAGE_MODEL] = pipeline_lists(pipeline, users)
            row["candidate_recall"] = candidate_recall(pipeline, users, relevant)
        else:
            options = {
                option_name(days, weight): _cold_start_lists(stage, shares[days], weight, users)
                for days in COLD_START_WINDOWS
                for weight in SEGMENT_WEIGHTS
            }
            row["cold_start_options"] = {
                name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in options.items()
            }
            row["cold_start_per_user"] = {
                name: _rounded(ndcg_per_user(recs, relevant)) for name, recs in options.items()
            }
        row["models"] = {name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in lists.items()}
        row["per_user"] = {name: _rounded(ndcg_per_user(recs, relevant)) for name, recs in lists.items()}
        out.append(row)
    return out


def cut_shares(interactions: pd.DataFrame, item_ids: np.ndarray, cut: int) -> dict[int | None, np.ndarray]:
    """Each popularity window's item shares as of the cut: the baselines' and the cold-start options' lists."""
    return {days: popularity_share(interactions, item_ids, cut, days) for days in COLD_START_WINDOWS}


def _rounded(values: np.ndarray) -> list[float]:
    """Per-user NDCG as plain floats (kept for paired intervals; not in the model card)."""
    return [round(float(v), 6) for v in values]


def _cold_start_lists(stage: Stage, share: np.ndarray, weight: float, users: list[str]) -> dict[str, list[str]]:
    """What the served cold start would answer with this window and segment weight.

    Users with the same segment attributes get the same list, so each list is ranked once per set of
    attributes (without segment weight: once), not once per user.
    """
    out = {}
    by_attributes: dict[tuple[tuple[str, object], ...], list[str]] = {}
    for user in users:
        attributes = stage.view.stored_attributes(user) if weight else {}
        key = tuple(sorted(attributes.items()))
        if key not in by_attributes:
            scores, _ = cold_start_scores(stage.view, share, weight, attributes)
            by_attributes[key] = [str(i) for i in stage.candidates.item_ids[ranking(scores)[:K]]]
        out[user] = by_attributes[key]
    return out


def option_name(days: int | None, weight: float) -> str:
    return f"{'all time' if days is None else f'{days} days'}, segment weight {weight:g}"


def choose_cold_start(rows: list[dict[str, Any]], horizon: str) -> tuple[int | None, float]:
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


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Mean and spread over cuts of NDCG@k, per horizon, segment and model."""
    key = f"ndcg@{K}"
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
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


def cut_label(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _summary(row: dict[str, Any]) -> str:
    best = max(row["models"].items(), key=lambda kv: kv[1][f"ndcg@{K}"])
    return f"{row['segment']} {row['users']} users, best {best[0]} {best[1][f'ndcg@{K}']:.4f}"


def compare(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per horizon: the served answer against the best popularity list, over every cut.

    The best list is the popularity window with the best mean over the cuts
    (the baseline a team would deploy instead). ``ratio`` is the mean over cuts
    of the served NDCG over the baseline's, with a paired 95% interval (users
    resampled within cuts); ``at_least_baseline`` counts the cuts where it beat
    that list (cold: matched it at least), ``won`` those where it beat every
    baseline of that cut, whichever window was best there (warm: ALS too), and
    ``lost_clearly`` those where it fell behind that cut's best baseline by
    more than the cut's paired 95% interval (:func:`paired_difference`).
    """
    key = f"ndcg@{K}"
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for horizon in dict.fromkeys(r["horizon"] for r in rows):
        for segment, served in (("warm", TWO_STAGE_MODEL), ("cold", COLD_START)):
            chosen = [r for r in rows if r["horizon"] == horizon and r["segment"] == segment and served in r["models"]]
            if not chosen:
                continue
            popular = [m for m in chosen[0]["models"] if m.startswith("popular")]
            best = max(popular, key=lambda m: np.mean([r["models"][m][key] for r in chosen]))
            pairs = [(np.asarray(r["per_user"][served]), np.asarray(r["per_user"][best])) for r in chosen]
            ratio, low, high = paired_ratio(pairs)

            def rival(row: dict[str, Any]) -> str:
                """The cut's best baseline (warm: ALS too)."""
                others = [m for m in row["models"] if m not in (COLD_START, TWO_STAGE_MODEL)]
                return max(others, key=lambda m: row["models"][m][key])

            def won(row: dict[str, Any], served: str = served, segment: str = segment) -> bool:
                ours, theirs = row["models"][served][key], row["models"][rival(row)][key]
                return ours > theirs if segment == "warm" else ours >= theirs

            def lost_clearly(row: dict[str, Any], served: str = served) -> bool:
                ours, theirs = np.asarray(row["per_user"][served]), np.asarray(row["per_user"][rival(row)])
                return paired_difference(ours, theirs)[2] < 0

            ahead = [r["models"][served][key] - r["models"][best][key] for r in chosen]
            out.setdefault(horizon, {})[segment] = {
                "model": served,
                "baseline": best,
                "ratio": ratio,
                "low": low,
                "high": high,
                "won": sum(won(r) for r in chosen),
                "at_least_baseline": sum(a > 0 if segment == "warm" else a >= 0 for a in ahead),
                "lost_clearly": sum(lost_clearly(r) for r in chosen),
                "cuts": len(chosen),
            }
    return out


def resampled_means(columns: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot x k: each column's mean over users drawn with replacement, the same users for every column (paired).

    Draws in blocks of 100, in the order one draw of n_boot x users would
    take them: that draw is 320 MB of indices at 20,000 users.
    """
    users = len(columns)
    blocks = []
    for done in range(0, n_boot, 100):
        blocks.append(columns[rng.integers(0, users, (min(100, n_boot - done), users))].mean(axis=1))
    return np.concatenate(blocks)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean NDCG of a minus b's at one cut, with a paired 95% bootstrap interval (users resampled).

    One cut holds 50-70 warm users on MovieLens-100K and one user's hit moves
    its mean by 0.015-0.02: this says whether a cut lost is lost beyond that.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError("the cut needs the same users, at least one, for both models")
    gaps = (a - b)[:, None]
    low, high = np.percentile(resampled_means(gaps, n_boot, np.random.default_rng(seed))[:, 0], [2.5, 97.5])
    return float(gaps.mean()), float(low), float(high)


def paired_ratio(
    per_cut: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean-over-cuts NDCG of a over b's, with a 95% bootstrap interval (NaN where b scores 0).

    Users are resampled within each cut and the same draw serves both models
    (paired), so the interval reflects how much the comparison, not each
    mean, depends on which users happened to be in the test. The cuts are
    taken as given: the interval covers the sampling of users only.
    """
    if not per_cut or any(len(a) != len(b) or not len(a) for a, b in per_cut):
        raise ValueError("every cut needs the same users, at least one, for both models")
    rng = np.random.default_rng(seed)
    # An array: per_cut is not empty, so the sum never stays at its start, 0.
    total = cast(np.ndarray, sum(resampled_means(np.column_stack([a, b]), n_boot, rng) for a, b in per_cut))
    means = total / len(per_cut)
    numerator, denominator = means[:, 0], means[:, 1]
    base = np.mean([b.mean() for _, b in per_cut])
    if base == 0 or not (denominator > 0).any():
        return float("nan"), float("nan"), float("nan")
    point = np.mean([a.mean() for a, _ in per_cut]) / base
    # A draw whose baseline scores 0 has no ratio: it is left out rather than counted as infinite.
    low, high = np.percentile(numerator[denominator > 0] / denominator[denominator > 0], [2.5, 97.5])
    return float(point), float(low), float(high)


def beaten_by(backtest: dict[str, Any], horizon: str) -> tuple[str, float, float] | None:
    """The best baseline, its NDCG@k and the two-stage model's, when the baseline won on warm users at ``horizon``."""
    models = backtest.get("mean", {}).get(horizon, {}).get("warm", {})
    if TWO_STAGE_MODEL not in models:
        return None
    ours = models[TWO_STAGE_MODEL]["mean"]
    name, best = max(((m, v["mean"]) for m, v in models.items() if m != TWO_STAGE_MODEL), key=lambda kv: kv[1])
    return (name, best, ours) if best > ours else None
