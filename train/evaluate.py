"""Offline evaluation: the per-user split, ranking metrics, baselines, report."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from features.families.candidate_pair import SOURCES
from features.schema import Columns
from stages.candidates import SCORE_CHUNK, CandidateModel, ranking
from stages.cold_start import first_k_not_in
from stages.pipeline import Query, TwoStageRecommender

K = 10
# Users answered at a time when evaluating (pipeline_lists): a whole number of the candidate stage's scoring
# chunks, so the users' ALS scores are computed in the same chunks as in one batch of all (a chunk of one user
# takes another BLAS path, whose last bits differ).
EVAL_BATCH_USERS = 2 * SCORE_CHUNK
FEW_USERS = 20  # below this many users per table, differences between models are mostly noise
UserId = TypeVar("UserId")  # the metrics take users by any key (the pipeline's ids are str)


class HoldoutRows(NamedTuple):
    """Row positions of the per-user split's parts, each in time order."""

    train: np.ndarray
    test: np.ndarray  # each user's last ``holdout`` share
    before: np.ndarray  # ``train`` parted again the same way: the per-user split's ranker learns on these
    after: np.ndarray


def holdout_rows(interactions: pd.DataFrame, holdout: float) -> HoldoutRows:
    """Each user's last ``holdout`` share of interactions (by time) held out, and the rest parted again.

    Users keep at least one interaction in each training part; ties in time keep file order, so the split is
    deterministic. Expects validated interactions (no missing id). Positions, not tables, from integer codes:
    a caller copies each part out of the data only while it needs it (at 20M rows the parts as tables, the
    whole table reordered and a groupby over its id strings had held three copies of the data at once).
    """
    n = len(interactions)
    index = np.int32 if n < 2**31 else np.int64  # half the memory of every per-row array below 2G rows
    by_time = np.lexsort((np.arange(n), interactions[Columns.timestamp].to_numpy())).astype(index)
    user_codes = pd.factorize(interactions[Columns.user])[0].astype(np.int32)[by_time]
    by_user = np.argsort(user_codes, kind="stable").astype(index)  # each user's rows together, in time order
    count = np.bincount(user_codes)
    first_of_user = (np.cumsum(count) - count).astype(index)
    place = np.empty(n, index)  # a row's place among its user's rows by time, 0 the first
    place[by_user] = np.arange(n, dtype=index) - first_of_user[user_codes[by_user]]
    del by_user
    n_train = count - np.floor(count * holdout).astype(np.int64)
    n_before = n_train - np.floor(n_train * holdout).astype(np.int64)
    in_train = place < n_train.astype(index)[user_codes]
    in_before = place < n_before.astype(index)[user_codes]
    del place, user_codes
    return HoldoutRows(
        train=by_time[in_train],
        test=by_time[~in_train],
        before=by_time[in_before],
        after=by_time[in_train & ~in_before],
    )


def rows_of(interactions: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions``, in that order, indexed from 0."""
    return interactions.take(positions).reset_index(drop=True)


def ranking_metrics(
    recommended: dict[UserId, list[str]], relevant: dict[UserId, set[str]], n_catalogue: int, k: int = K
) -> dict[str, float]:
    """NDCG, Recall, MAP and HitRate at k (averaged over users), and coverage.

    Binary relevance. Recall divides by all of a user's relevant items; NDCG
    and MAP normalise by the best possible list of length ``min(k, |rel|)``.
    """
    ndcg, recall, ap, hit = [], [], [], []
    shown = set()
    for user, rel in relevant.items():
        recs = recommended.get(user, [])[:k]
        shown.update(recs)
        hits = np.array([item in rel for item in recs], dtype=np.float64)
        ndcg.append(_ndcg(hits, len(rel), k))
        recall.append(float(hits.sum() / len(rel)))
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1) if len(hits) else hits
        ap.append(float((precision_at * hits).sum() / min(k, len(rel))))
        hit.append(float(hits.any()))
    return {
        f"ndcg@{k}": float(np.mean(ndcg)),
        f"recall@{k}": float(np.mean(recall)),
        f"map@{k}": float(np.mean(ap)),
        f"hitrate@{k}": float(np.mean(hit)),
        "coverage": len(shown) / n_catalogue,
        "users": len(relevant),
    }


def ndcg_per_user(recommended: dict[UserId, list[str]], relevant: dict[UserId, set[str]], k: int = K) -> np.ndarray:
    """Binary-relevance NDCG@k of each user in ``relevant`` (in its order), for paired comparisons."""
    return np.array(
        [
            _ndcg(np.array([item in rel for item in recommended.get(user, [])[:k]], dtype=np.float64), len(rel), k)
            for user, rel in relevant.items()
        ]
    )


def _ndcg(hits: np.ndarray, n_relevant: int, k: int) -> float:
    """DCG of a list's hits over the best possible list of length ``min(k, n_relevant)``."""
    discounts = _discounts(k)
    return float((hits * discounts[: len(hits)]).sum() / discounts[: min(k, n_relevant)].sum())


@functools.cache
def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k, made once per k (a backtest asks for it about 200,000 times)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    discounts.flags.writeable = False
    return discounts


def popularity_lists(
    candidates: CandidateModel, share: np.ndarray, users: list[str], k: int = K
) -> dict[str, list[str]]:
    """Top-k by a popularity share, each user's seen items left out."""
    order = ranking(share)
    out = {}
    for user in users:
        index = candidates.user_index.get(user)
        seen = set(candidates.seen[index].indices.tolist()) if index is not None else set()
        out[user] = [str(i) for i in candidates.item_ids[first_k_not_in(order, k, seen)]]
    return out


def pipeline_lists(pipeline: TwoStageRecommender, users: list[str], k: int = K) -> dict[str, list[str]]:
    """What the pipeline answers each user (the served path: two-stage, or cold start).

    ``EVAL_BATCH_USERS`` at a time: the per-user split's 20,000 users in one batch held 1.9 GB of feature rows at
    20M interactions (docs/bench/training_cli_20m/).
    """
    lists: dict[str, list[str]] = {}
    for first in range(0, len(users), EVAL_BATCH_USERS):
        batch = users[first : first + EVAL_BATCH_USERS]
        answers = pipeline.recommend([Query(u, k=k) for u in batch])
        lists.update((u, a.item_ids) for u, a in zip(batch, answers, strict=True))
    return lists


def candidate_recall(
    pipeline: TwoStageRecommender, users: list[str], relevant: dict[str, set[str]]
) -> dict[str, float]:
    """Share of each user's next items among the candidates, per source and merged: the ranker's ceiling."""
    batch = pipeline.candidate_lists([Query(u) for u in users])
    ids = pipeline.candidates.item_ids
    recall: dict[str, list[float]] = {source: [] for source in (*SOURCES, "merged")}
    for i, user in enumerate(users):
        items = batch.items[i]
        recall["merged"].append(len(set(ids[items]) & relevant[user]) / len(relevant[user]))
        for source in SOURCES:
            proposed = items[~np.isnan(batch.source_ranks[source][i])]
            recall[source].append(len(set(ids[proposed]) & relevant[user]) / len(relevant[user]))
    mean_size = float(np.mean([len(c) for c in batch.items]))
    return {**{name: float(np.mean(values)) for name, values in recall.items()}, "mean_candidates": mean_size}


def write_report(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """JSON, Markdown table and a PNG bar chart of the evaluation."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "evaluation.json",
        "markdown": directory / "evaluation.md",
        "png": directory / "evaluation.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=True))
    paths["markdown"].write_text(markdown_table(results))
    _chart(results, paths["png"])
    return paths


def markdown_table(results: dict[str, Any]) -> str:
    """The evaluation as Markdown (also printed after training): the backtest first, the per-user split after."""
    parts = []
    if "backtest" in results:
        parts.append(backtest_table(results["backtest"]))
    if "per_user_split" in results:
        parts.append(per_user_table(results["per_user_split"]))
    return "\n".join(parts)


def backtest_table(backtest: dict[str, Any]) -> str:
    """Per horizon and user segment: NDCG@k per cut (a row each) and model, the mean, and the served answer
    against the best popularity list (ratio, 95% interval, cuts won); candidate recall per source."""
    if "skipped" in backtest:
        return f"Backtest (primary) skipped: {backtest['skipped']}.\n"
    key = f"ndcg@{K}"
    lines = [f"Backtest (primary): {backtest['protocol']}.", ""]
    fewest = min((r["users"] for r in backtest["rows"]), default=0)
    if fewest < FEW_USERS:
        lines += [too_few_users(fewest), ""]
    for horizon, segments in backtest["mean"].items():
        for segment, models in segments.items():
            rows = [r for r in backtest["rows"] if r["horizon"] == horizon and r["segment"] == segment]
            names = list(models)
            lines += [
                f"**{horizon}, {segment} users**, {key}:",
                "",
                "| cut | users | " + " | ".join(names) + " |",
                "|---|---:|" + "---:|" * len(names),
            ]
            for row in rows:
                values = " | ".join(_cell(row["models"].get(m, {}).get(key)) for m in names)
                lines.append(f"| {row['cut']} | {row['users']} | {values} |")
            means = " | ".join(f"**{models[m]['mean']:.4f}**" for m in names)
            lines.append(f"| mean | {sum(r['users'] for r in rows)} | {means} |")
            lines.append("")
            found = backtest.get("summary", {}).get(horizon, {}).get(segment)
            if found:
                lines += [summary_line(found), ""]
    recall_rows = [r for r in backtest["rows"] if "candidate_recall" in r]
    if recall_rows:
        sources = [s for s in recall_rows[0]["candidate_recall"] if s != "mean_candidates"]
        lines += ["Candidate recall (share of next items among the candidates, mean over cuts):", ""]
        lines += [
            "| horizon | " + " | ".join(sources) + " | candidates per user |",
            "|---|" + "---:|" * (len(sources) + 1),
        ]
        for horizon in backtest["mean"]:
            rows = [r["candidate_recall"] for r in recall_rows if r["horizon"] == horizon]
            values = " | ".join(f"{np.mean([r[s] for r in rows]):.4f}" for s in sources)
            lines.append(f"| {horizon} | {values} | {np.mean([r['mean_candidates'] for r in rows]):.0f} |")
        lines.append("")
    cold = backtest.get("cold_start")
    if cold:
        window = "all time" if cold["days"] is None else f"last {cold['days']} days"
        weight = cold["segment_weight"]
        lines.append(f"Cold start chosen by the backtest: popularity over the {window}, segment weight {weight:g}.")
        lines.append("")
    return "\n".join(lines)


def summary_line(found: dict[str, Any]) -> str:
    """The served answer against the best popularity list, in one sentence."""
    verb = "beats" if found["model"] == "two-stage (ALS + CatBoost)" else "matches or beats"
    clearly = found.get("lost_clearly")  # absent from model cards saved before it was counted
    lost = "" if clearly is None else f"; lost beyond the cut's paired 95% interval at {clearly}"
    return (
        f"{found['model']}: **{found['ratio']:.2f}×** {found['baseline']} on the mean over cuts "
        f"(paired 95% interval {found['low']:.2f}–{found['high']:.2f}×); {verb} it at "
        f"{found['at_least_baseline']} of {found['cuts']} cuts, and the best of every baseline at {found['won']}"
        f"{lost}."
    )


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def too_few_users(users: int) -> str:
    """The caveat printed over a table scored on too few users to rank models by."""
    return f"Note: as few as {users} users per table (under {FEW_USERS}): too few to tell the models apart."


def per_user_table(split: dict[str, Any]) -> str:
    """The secondary, per-user holdout table."""
    if "skipped" in split:
        return f"Per-user split (secondary) skipped: {split['skipped']}.\n"
    metrics = [f"ndcg@{K}", f"recall@{K}", f"map@{K}", f"hitrate@{K}", "coverage"]
    lines = [
        f"Per-user split (secondary; {split['split']}):",
        "",
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, row in split["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in metrics) + " |")
    lines.append("")
    lines.append(
        f"Candidate recall (merged): {split['candidate_recall']['merged']:.4f}; users evaluated: {split['users']}; "
        f"its ranker learnt from {split['ranker_users']} users."
    )
    if split["users"] < FEW_USERS:
        lines.append(too_few_users(split["users"]))
    return "\n".join(lines) + "\n"


def _chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"ndcg@{K}"
    panels = [
        (f"backtest, {horizon}, {segment}", {m: v["mean"] for m, v in models.items()})
        for horizon, segments in results.get("backtest", {}).get("mean", {}).items()
        for segment, models in segments.items()
    ]
    if "models" in results.get("per_user_split", {}):
        panels.append(("per-user split", {m: v[key] for m, v in results["per_user_split"]["models"].items()}))
    if not panels:
        panels = [("no evaluation could run on this data", {})]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        ax.barh(list(values), list(values.values()))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(key)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Evaluation ({results['dataset']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
