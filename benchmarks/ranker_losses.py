"""Which CatBoost loss ranks best, on the backtest (warm users, NDCG@10 mean over cuts), and how long it trains.

python -m benchmarks.ranker_losses [--losses Logloss,YetiRank]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.loadgen import markdown
from features import movielens
from stages.candidates import CandidateParams
from train.backtest import TWO_STAGE_MODEL, BacktestParams, run_backtest
from train.evaluate import K
from train.ranker_training import RankerParams, Stages

LOSSES = ("Logloss", "YetiRank", "YetiRank:permutations=1", "PairLogit")


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--losses", default=",".join(LOSSES))
    args = cli.parse_args(argv)
    stages = Stages(movielens.load(), CandidateParams(), keep_rows=True)  # shared: every loss sees the same rows
    rows = []
    for loss in args.losses.split(","):
        start = time.perf_counter()
        result = run_backtest(stages, replace(RankerParams(), loss=loss), BacktestParams())
        seconds = time.perf_counter() - start
        row = {"loss": loss, "seconds": round(seconds, 1)}
        for horizon, segments in result["mean"].items():
            row[f"ndcg@{K} warm, {horizon}"] = round(segments["warm"][TWO_STAGE_MODEL]["mean"], 4)
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
