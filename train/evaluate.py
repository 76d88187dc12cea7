"""Offline evaluation: temporal split, ranking metrics, baselines, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import Columns
from stages.candidates import CandidateModel

K = 10


def temporal_split(interactions: pd.DataFrame, holdout: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's last ``holdout`` share of interactions (by time) held out.

    Users keep at least one interaction in the training part; ties in time
    keep file order, so the split is deterministic.
    """
    ordered = interactions.reset_index(drop=True)
    ordered = ordered.iloc[np.lexsort((ordered.index.to_numpy(), ordered[Columns.timestamp].to_numpy()))]
    position = ordered.groupby(Columns.user, sort=False).cumcount().to_numpy()
    count = ordered.groupby(Columns.user, sort=False)[Columns.item].transform("size").to_numpy()
    n_test = np.floor(count * holdout).astype(np.int64)
    is_test = position >= count - n_test
    return ordered[~is_test].reset_index(drop=True), ordered[is_test].reset_index(drop=True)


def relevant_items(train: pd.DataFrame, test: pd.DataFrame, model: CandidateModel) -> dict[int, set[str]]:
    """Held-out items per known user, minus items already seen in training."""
    seen = train.groupby(Columns.user)[Columns.item].agg(set)
    out = {}
    for user, items in test.groupby(Columns.user)[Columns.item]:
        index = model.user_index.get(user)
        if index is None:
            continue
        fresh = set(items) - seen.get(user, set())
        if fresh:
            out[index] = fresh
    return out


def ranking_metrics(
    recommended: dict[int, list[str]], relevant: dict[int, set[str]], n_catalogue: int, k: int = K
) -> dict[str, float]:
    """NDCG, Recall, MAP and HitRate at k (averaged over users), and coverage.

    Binary relevance. Recall divides by all of a user's relevant items; NDCG
    and MAP normalise by the best possible list of length ``min(k, |rel|)``.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall, ap, hit = [], [], [], []
    shown = set()
    for user, rel in relevant.items():
        recs = recommended.get(user, [])[:k]
        shown.update(recs)
        hits = np.array([item in rel for item in recs], dtype=np.float64)
        ideal = discounts[: min(k, len(rel))].sum()
        ndcg.append(float((hits * discounts[: len(hits)]).sum() / ideal))
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


def popularity_lists(
    train: pd.DataFrame, model: CandidateModel, users: list[int], since: int | None = None, k: int = K
) -> dict[int, list[str]]:
    """Most interacted items (optionally since a time), seen items excluded."""
    window = train if since is None else train[train[Columns.timestamp] >= since]
    counts = window.groupby(Columns.item).size()
    counts = counts.reindex(model.item_ids, fill_value=0).to_numpy()
    order = np.lexsort((np.arange(len(counts)), -counts))
    out = {}
    for user in users:
        seen = set(model.seen[user].indices)
        picked = [i for i in order[: k + len(seen)] if i not in seen][:k]
        out[user] = [str(model.item_ids[i]) for i in picked]
    return out


def candidate_recall(model: CandidateModel, relevant: dict[int, set[str]], n: int) -> float:
    """Share of held-out items inside ALS top-``n``: the ranker's ceiling."""
    users = np.fromiter(relevant, dtype=np.int64)
    batch = model.top_n(users, n)
    recalls = []
    for user, items in zip(users, batch.items, strict=True):
        found = set(model.item_ids[items]) & relevant[user]
        recalls.append(len(found) / len(relevant[user]))
    return float(np.mean(recalls))


def write_report(results: dict, directory: Path) -> dict[str, Path]:
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


def markdown_table(results: dict) -> str:
    """The evaluation as a Markdown table (also printed after training)."""
    metrics = [f"ndcg@{K}", f"recall@{K}", f"map@{K}", f"hitrate@{K}", "coverage"]
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, row in results["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in metrics) + " |")
    lines.append("")
    lines.append(
        f"Candidate recall@{results['n_candidates']} (ceiling for the ranker): "
        f"{results['candidate_recall']:.4f}; users evaluated: {results['users']}."
    )
    return "\n".join(lines) + "\n"


def _chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    metrics = [f"ndcg@{K}", f"recall@{K}", f"map@{K}", f"hitrate@{K}"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results["models"][name][m] for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2, metrics)
    ax.set_title(f"Held-out evaluation ({results['dataset']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
