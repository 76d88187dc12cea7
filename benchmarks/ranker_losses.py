"""Which CatBoost loss for the ranker: NDCG@10 and fit time per loss, same split.

Trains the ranker with each loss exactly as ``python -m train`` does for its
evaluation (features before the cut, labels after) and scores the held-out
window on MovieLens-100K::

    python -m benchmarks.ranker_losses
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.loadgen import markdown
from features import movielens
from features.schema import Dataset
from stages.candidates import ALSParams
from stages.pipeline import Query, TwoStageRecommender
from train.evaluate import K, ranking_metrics, relevant_items, temporal_split
from train.ranker_training import RankerParams, build_stage, fit_ranker

LOSSES = ("Logloss", "YetiRank", "YetiRank:permutations=1", "PairLogit")


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--losses", default=",".join(LOSSES))
    args = cli.parse_args(argv)
    dataset = movielens.load()
    train_part, test_part = temporal_split(dataset.interactions)
    history = Dataset(train_part, dataset.users, dataset.items)
    als = ALSParams()
    candidates, view = build_stage(history, als, recent_days=30)
    relevant = relevant_items(train_part, test_part, candidates)
    users = sorted(relevant)
    queries = [Query(str(candidates.user_ids[u]), k=K) for u in users]
    rows = []
    for loss in args.losses.split(","):
        params = replace(RankerParams(), loss=loss)
        start = time.perf_counter()
        ranker, _ = fit_ranker(history, als, params, recent_days=30, show_progress=False)
        seconds = time.perf_counter() - start
        answers = TwoStageRecommender(candidates, ranker, view, params.n_candidates).recommend(queries)
        metrics = ranking_metrics(
            {u: a.item_ids for u, a in zip(users, answers, strict=True)}, relevant, candidates.n_items
        )
        rows.append({"loss": loss, f"ndcg@{K}": round(metrics[f"ndcg@{K}"], 4), "fit_seconds": round(seconds, 1)})
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
