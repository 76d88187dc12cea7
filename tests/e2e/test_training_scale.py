"""The training-scale benchmark, at its smallest size: the command BENCHMARKS' scale table comes from still runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow


def test_the_scale_benchmark_trains_and_reports_every_step(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.training_scale", "--sizes", "ci", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json.loads((out / "training_scale.json").read_text())
    assert "error" not in row, done.stdout[-3000:]
    assert row["size"] == "ci" and row["interactions"] == 12_000 and row["engine"] == "this process"
    assert {"load data", "final ranker: trained on the latest cuts", "save models and feature store"} <= set(
        row["step_seconds"]
    )
    assert row["peak_mb"] > 0 and row["request_p50_ms"] > 0
    ndcg = row["ndcg@10"]  # the planted taste clusters: the model finds what popularity cannot
    assert ndcg["two-stage (ALS + CatBoost)"] > 1.2 * ndcg["popular (all time)"]
    # ... and the ranker adds to its candidate source (0.6214 against ALS's 0.4344 now).
    assert ndcg["two-stage (ALS + CatBoost)"] > ndcg["ALS"]
    assert (out / "training_scale.png").stat().st_size > 0
