"""What the `diversity` knob buys and costs: NDCG and intra-list diversity on the MovieLens backtest.

At each backtest cut T the models are fitted on interactions before T, as in
:mod:`train.backtest`. Every user known at T who takes new items in the
horizon after T is answered through the pipeline at each diversity level
(the same request path as the service: ``Query(diversity=...)``) and scored
on those items. Intra-list diversity is 1 - the mean pairwise cosine of the
list's ALS item factors (the similarity the re-rank uses), and, as a check
that does not reuse the model's own geometry, 1 - the mean pairwise Jaccard
overlap of the items' genres.

    python -m train.diversity            # MovieLens-100K, the README's table
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import movielens
from features.schema import DAY, Columns
from stages.candidates import CandidateParams
from stages.pipeline import Query, TwoStageRecommender
from stages.rules import intra_list_diversity
from train.backtest import BacktestParams, backtest_cuts
from train.evaluate import K, ranking_metrics
from train.ranker_training import RankerParams, Stages, fit_ranker

LEVELS = (0.0, 0.25, 0.5)


@dataclass(frozen=True)
class DiversityParams:
    levels: tuple[float, ...] = LEVELS
    n_cuts: int = 3
    horizon_days: int = 14


def relevant_after(interactions: pd.DataFrame, cut: int, horizon_days: int) -> dict[str, set[str]]:
    """Per user: the items first taken in the horizon after the cut (what a list at the cut should hold)."""
    times = interactions[Columns.timestamp]
    before = interactions[times < cut].groupby(Columns.user)[Columns.item].agg(set).to_dict()
    window = interactions[(times >= cut) & (times < cut + horizon_days * DAY)]
    out = {}
    for user, rows in window.groupby(Columns.user, sort=True):
        new = set(rows[Columns.item]) - before.get(user, set())
        if new:
            out[str(user)] = {str(i) for i in new}
    return out


def genre_diversity(items: list[str], genres: dict[str, frozenset[str]]) -> float:
    """1 - mean pairwise Jaccard overlap of the items' genres."""
    sets = [genres.get(i, frozenset()) for i in items]
    pairs = [(a, b) for n, a in enumerate(sets) for b in sets[n + 1 :]]
    if not pairs:
        return float("nan")
    return 1 - float(np.mean([len(a & b) / len(a | b) if a | b else 0.0 for a, b in pairs]))


def evaluate_cut(
    pipeline: TwoStageRecommender,
    interactions: pd.DataFrame,
    cut: int,
    params: DiversityParams,
    genres: dict[str, frozenset[str]],
) -> dict[str, Any]:
    """One cut: per diversity level, NDCG@k and the mean intra-list diversity over the warm users."""
    relevant = {u: r for u, r in relevant_after(interactions, cut, params.horizon_days).items()}
    users = [u for u in relevant if u in pipeline.candidates.user_index]
    relevant = {u: relevant[u] for u in users}
    index = pipeline.candidates.item_index
    levels = {}
    for level in params.levels:
        answers = pipeline.recommend([Query(u, k=K, diversity=level) for u in users])
        lists = {u: a.item_ids for u, a in zip(users, answers, strict=True)}
        metrics = ranking_metrics(lists, relevant, pipeline.candidates.n_items)
        vectors = pipeline.unit_vectors
        metrics["ild"] = float(
            np.nanmean([intra_list_diversity(np.array([index[i] for i in r]), vectors) for r in lists.values()])
        )
        metrics["genre_ild"] = float(np.nanmean([genre_diversity(r, genres) for r in lists.values()]))
        levels[str(level)] = metrics
    return {"cut": int(cut), "users": len(users), "levels": levels}


def run(stages: Stages, ranker_params: RankerParams, params: DiversityParams, echo: bool = True) -> dict[str, Any]:
    """Every backtest cut; the means over cuts per diversity level."""
    inter = stages.dataset.interactions
    items = stages.dataset.items
    genres = (
        {str(i): frozenset(g) for i, g in items["genres"].items()} if items is not None and "genres" in items else {}
    )
    cuts = backtest_cuts(inter, BacktestParams(n_cuts=params.n_cuts, horizon_days=params.horizon_days))
    rows = []
    for cut in cuts:
        stage = stages.at(cut)
        ranker, _ = fit_ranker(stages, cut, ranker_params, serve_at=cut, show_progress=False)
        pipeline = TwoStageRecommender(stage.candidates, ranker, stage.view, ranker_params.n_candidates)
        rows.append(evaluate_cut(pipeline, inter, cut, params, genres))
        if echo:
            print(f"  cut {cut}: {rows[-1]['users']} warm users", flush=True)
    keys = (f"ndcg@{K}", "ild", "genre_ild")
    mean = {
        str(level): {key: float(np.mean([r["levels"][str(level)][key] for r in rows])) for key in keys}
        for level in params.levels
    }
    return {
        "protocol": (
            f"{len(cuts)} global time cuts, warm users, the new items they took in the {params.horizon_days} days "
            "after the cut; ild = 1 - mean pairwise cosine of ALS item factors, genre_ild = 1 - mean pairwise "
            "Jaccard of genres"
        ),
        "rows": rows,
        "mean": mean,
    }


def markdown(results: dict[str, Any]) -> str:
    """The README's table: mean NDCG@k and intra-list diversity per level."""
    lines = [f"| diversity | NDCG@{K} | intra-list diversity (ALS cosine) | intra-list diversity (genres) |"]
    lines.append("|---|---|---|---|")
    for level, m in results["mean"].items():
        lines.append(f"| {level} | {m[f'ndcg@{K}']:.4f} | {m['ild']:.4f} | {m['genre_ild']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default=",".join(str(v) for v in LEVELS), help="diversity levels, 0..1")
    parser.add_argument("--cuts", type=int, default=DiversityParams.n_cuts, help="backtest cuts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    levels = tuple(float(v) for v in args.levels.split(","))
    stages = Stages(movielens.load(), CandidateParams())
    results = run(stages, RankerParams(), DiversityParams(levels=levels, n_cuts=args.cuts))
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
