"""What recent items in a request are worth: a backtest where users tell the model their first new items.

At each backtest cut T the models are fitted on interactions before T, as in
:mod:`train.backtest`. Each user active in the horizon after T with more
than ``n_recent`` new items passes their first ``n_recent`` interactions
after T as ``recent_items`` (with timestamps and weights, as a client would)
and is scored on the new items they took after those. Compared, on the same
users and the same relevant items:

- warm users: the two-stage model without the recent items, with them only
  excluded (a client that filters but does not tell), and with them passed;
- users unknown at T: popularity over each window, item-to-item cosine
  from the recent items (the usual "because you watched" answer for a
  visitor), and the two-stage model from the recent items alone. Next to
  them, the one list that suits these users best, chosen from what they took
  next: no popularity list, over any window, can beat it, so it shows how
  much of a visitor's answer can come from popularity at all.

    python -m train.freshness            # MovieLens-100K, the README's table
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import movielens
from features.schema import DAY, Columns
from stages.candidates import CandidateModel, CandidateParams, popularity_share, ranking
from stages.pipeline import Query, RecentEvent, TwoStageRecommender
from train.backtest import POPULARITY_WINDOWS, BacktestParams, backtest_cuts, paired_ratio, popularity_name
from train.evaluate import K, ndcg_per_user, popularity_lists, ranking_metrics
from train.kernels import restart_with_pinned_kernels
from train.ranker_training import RankerParams, Stages, fit_rankers

WITHOUT = "two-stage, recent items not passed"
EXCLUDED = "two-stage, recent items only excluded"
WITH = "two-stage, recent items passed"
ITEM_KNN = "item-to-item cosine from the recent items"
HINDSIGHT = "hindsight: the best single list for these users (a ceiling, not a model)"


@dataclass(frozen=True)
class FreshnessParams:
    n_recent: int = 3  # the first interactions after the cut a user passes as recent_items
    n_cuts: int = 3
    horizon_days: int = 14


def split_after(interactions: pd.DataFrame, cut: int, horizon_days: int, n_recent: int) -> dict[str, pd.DataFrame]:
    """Per user active in the horizon: their interactions after the cut, in time order (ties by item)."""
    window = interactions[
        (interactions[Columns.timestamp] >= cut) & (interactions[Columns.timestamp] < cut + horizon_days * DAY)
    ]
    window = window.sort_values([Columns.timestamp, Columns.item], kind="stable")
    return {str(user): rows for user, rows in window.groupby(Columns.user, sort=True) if len(rows) > n_recent}


def events(rows: pd.DataFrame) -> list[RecentEvent]:
    """Interactions as a client would pass them."""
    return [
        RecentEvent(str(item), int(ts), float(weight))
        for item, ts, weight in zip(rows[Columns.item], rows[Columns.timestamp], rows[Columns.weight], strict=True)
    ]


def evaluate_cut(
    pipeline: TwoStageRecommender, inter: pd.DataFrame, cut: int, params: FreshnessParams
) -> list[dict[str, Any]]:
    """Warm and unknown users at one cut: NDCG and friends for each way of answering."""
    candidates = pipeline.candidates
    before = inter[inter[Columns.timestamp] < cut]
    had = before.groupby(Columns.user)[Columns.item].agg(set).to_dict()
    rows = []
    for segment, in_segment in (("warm", True), ("unknown", False)):
        users: list[str] = []
        relevant: dict[str, set[str]] = {}
        recent: dict[str, pd.DataFrame] = {}
        for user, after in split_after(inter, cut, params.horizon_days, params.n_recent).items():
            if (user in candidates.user_index) != in_segment:
                continue
            told = after.iloc[: params.n_recent]
            later = set(after.iloc[params.n_recent :][Columns.item]) - set(told[Columns.item]) - had.get(user, set())
            if later:
                users.append(user)
                relevant[user] = later
                recent[user] = told
        if not users:
            continue
        lists = _lists(pipeline, before, cut, users, recent, segment, relevant)
        rows.append(
            {
                "cut": int(cut),
                "segment": segment,
                "users": len(users),
                "models": {name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in lists.items()},
                # Per user, in one order for every model: the paired comparisons' input (see gains).
                "ndcg_per_user": {name: ndcg_per_user(recs, relevant).tolist() for name, recs in lists.items()},
            }
        )
    return rows


def _lists(
    pipeline: TwoStageRecommender,
    before: pd.DataFrame,
    cut: int,
    users: list[str],
    recent: dict[str, pd.DataFrame],
    segment: str,
    relevant: dict[str, set[str]],
) -> dict[str, dict[str, list[str]]]:
    def answer(make: Callable[[str], Query]) -> dict[str, list[str]]:
        answers = pipeline.recommend([make(u) for u in users])
        return {u: a.item_ids for u, a in zip(users, answers, strict=True)}

    told = {u: [str(i) for i in recent[u][Columns.item]] for u in users}
    lists = {WITH: answer(lambda u: Query(u, k=K, recent_items=events(recent[u])))}
    if segment == "warm":
        lists[WITHOUT] = answer(lambda u: Query(u, k=K))
        lists[EXCLUDED] = answer(lambda u: Query(u, k=K, exclude_items=told[u]))
    else:
        candidates = pipeline.candidates
        for days in POPULARITY_WINDOWS:
            share = popularity_share(before, candidates.item_ids, cut, days)
            # The baseline knows the recent items too: it leaves them out.
            ranked = popularity_lists(candidates, share, users, K + len(told[users[0]]))
            lists[popularity_name(days)] = {u: [i for i in ranked[u] if i not in told[u]][:K] for u in users}
        lists[ITEM_KNN] = item_knn_lists(candidates, {u: told[u] for u in users})
        lists[HINDSIGHT] = hindsight_lists(relevant, told)
    return lists


def hindsight_lists(relevant: dict[str, set[str]], told: dict[str, list[str]], k: int = K) -> dict[str, list[str]]:
    """One list for every user, chosen knowing what they took next; each user's own recent items left out.

    Items are ordered by their summed share of each user's ideal DCG (an item
    a user took counts 1 / IDCG@k of that user), ties by id. By the
    rearrangement inequality that is the fixed list with the highest mean
    NDCG@k, up to the few places each user's recent items shift it: a ceiling
    for any list that is the same for everyone, popularity included.
    """
    gain: dict[str, float] = {}
    for items in relevant.values():
        share = 1.0 / sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(items))))
        for item in items:
            gain[str(item)] = gain.get(str(item), 0.0) + share
    order = sorted(gain, key=lambda item: (-gain[item], item))
    out = {}
    for user in relevant:
        leave_out = set(told.get(user, ()))
        out[user] = [item for item in order if item not in leave_out][:k]
    return out


def item_knn_lists(candidates: CandidateModel, told: dict[str, list[str]], k: int = K) -> dict[str, list[str]]:
    """Per user, the items closest to their recent ones: summed cosine of item columns of the training matrix."""
    taken = (candidates.seen > 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(taken.sum(axis=0)).ravel()) + 1e-9
    out = {}
    for user, items in told.items():
        seeds = [candidates.item_index[i] for i in items if i in candidates.item_index]
        scores = np.zeros(candidates.n_items)
        if seeds:
            overlap = (taken.T @ taken[:, seeds]).toarray()  # items x seeds: users who took both
            scores = (overlap / norms[:, None] / norms[seeds][None, :]).sum(axis=1)
            scores[seeds] = -np.inf
        out[user] = [str(i) for i in candidates.item_ids[ranking(scores)[:k]]]
    return out


def run(stages: Stages, ranker_params: RankerParams, params: FreshnessParams, echo: bool = True) -> dict[str, Any]:
    """Every backtest cut; the mean NDCG@k per segment and way of answering."""
    inter = stages.dataset.interactions
    cuts = backtest_cuts(inter, BacktestParams(n_cuts=params.n_cuts, horizon_days=params.horizon_days))
    rows: list[dict[str, Any]] = []
    for cut in cuts:
        rankers, _ = fit_rankers(stages, cut, ranker_params, serve_at=cut, show_progress=False)
        stage = stages.at(cut)  # after the rankers, which build their training cuts' stages and let them go
        pipeline = TwoStageRecommender(
            stage.candidates,
            rankers.main,
            stage.view,
            ranker_params.n_candidates,
            visitor_ranker=rankers.visitors,
            recent_ranker=rankers.recent,
        )
        rows += evaluate_cut(pipeline, inter, cut, params)
        if echo:
            print(f"  cut {cut}: " + ", ".join(f"{r['segment']} {r['users']} users" for r in rows[-2:]), flush=True)
    key = f"ndcg@{K}"
    mean: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for model, metrics in row["models"].items():
            mean.setdefault(row["segment"], {}).setdefault(model, []).append(metrics[key])
    means = {s: {m: float(np.mean(v)) for m, v in models.items()} for s, models in mean.items()}
    return {
        "protocol": (
            f"{len(cuts)} global time cuts; users pass their first {params.n_recent} interactions in the "
            f"{params.horizon_days} days after the cut as recent_items and are scored on the new items they took "
            "after those"
        ),
        "rows": rows,
        "mean": means,
        "gains": gains(rows, means),
    }


def gains(rows: list[dict[str, Any]], means: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The comparisons the targets are about, each with a 95% interval from a paired bootstrap.

    Warm users: recent items passed over not passed, and over only excluded.
    Unknown users: the two-stage answer over the best popularity list (best
    on these same users, which flatters the baseline) and over item-to-item;
    and the hindsight ceiling over that popularity list, the most any list
    the same for everyone could gain.
    """
    out = []
    wanted = [("warm", WITH, WITHOUT), ("warm", WITH, EXCLUDED), ("unknown", WITH, ITEM_KNN)]
    popular = [m for m in means.get("unknown", {}) if m.startswith("popular")]
    if popular:
        best = max(popular, key=means["unknown"].__getitem__)
        wanted += [("unknown", WITH, best), ("unknown", HINDSIGHT, best)]
    for segment, model, baseline in wanted:
        per_cut = [
            (np.asarray(row["ndcg_per_user"][model]), np.asarray(row["ndcg_per_user"][baseline]))
            for row in rows
            if row["segment"] == segment and {model, baseline} <= row["ndcg_per_user"].keys()
        ]
        if per_cut:
            ratio, low, high = paired_ratio(per_cut)
            out.append(
                {"segment": segment, "model": model, "baseline": baseline, "ratio": ratio, "low": low, "high": high}
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    """The README's table: mean NDCG@k over the cuts per segment and way of answering."""
    lines = [f"| users | answered by | NDCG@{K} |", "|---|---|---|"]
    for segment, models in results["mean"].items():
        for model, value in sorted(models.items(), key=lambda kv: kv[1]):
            lines.append(f"| {segment} | {model} | {value:.4f} |")
    lines += ["", "| users | answered by | over | ratio | 95% interval |", "|---|---|---|---|---|"]
    for gain in results["gains"]:
        lines.append(
            f"| {gain['segment']} | {gain['model']} | {gain['baseline']} | {gain['ratio']:.3f}x "
            f"| {gain['low']:.3f}x to {gain['high']:.3f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recent", type=int, default=FreshnessParams.n_recent, help="items each user passes")
    parser.add_argument("--cuts", type=int, default=FreshnessParams.n_cuts, help="backtest cuts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    stages = Stages(movielens.load(), CandidateParams())
    results = run(stages, RankerParams(), FreshnessParams(n_recent=args.recent, n_cuts=args.cuts))
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    restart_with_pinned_kernels()  # the same model on any AVX2 machine (train/kernels.py)
    main()
