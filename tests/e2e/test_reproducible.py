"""`python -m train` twice on the same files and seed: the same model, answer for answer, with the kernels recorded.

Each run is the real command in its own process, so each restarts itself
with the pinned kernels (train/kernels.py) as a user's run does; both save
to the session's model store, and every user's answer is compared, scores
to the last bit.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import numpy as np
import pytest

from serving.runtime import Runtime
from stages.pipeline import Query
from train.kernels import pinned_environment

pytestmark = pytest.mark.slow

FLAGS = [
    "--ranker-iterations", "40", "--fold-iterations", "20", "--backtest-cuts", "2", "--train-cuts", "2",
    "--n-candidates", "50",
]  # fmt: skip


def train_once(files: dict, tmp_path, store: str) -> str:
    data = [f"--{name}={files[name]}" for name in ("interactions", "users", "items")]
    out = subprocess.run(
        [sys.executable, "-m", "train", *data, *FLAGS, "--feature-store", str(tmp_path / store)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return re.search(r"saved \S+, (recsys-ranker:\w+);", out.stdout).group(1)  # type: ignore[union-attr]


def test_training_twice_gives_the_same_answers_and_records_its_kernels(synthetic_files, small_dataset, tmp_path):
    files = synthetic_files["parquet"]
    first, second = (Runtime.from_store(train_once(files, tmp_path, name)) for name in ("one", "two"))
    assert first.tags != second.tags
    np.testing.assert_array_equal(first.candidates.als.item_factors, second.candidates.als.item_factors)
    users = sorted(map(str, small_dataset.interactions["user_id"].unique()))
    queries = [Query(u, k=20) for u in [*users, "someone new"]]
    expected = [(r.item_ids, r.scores, r.strategy) for r in first.pipeline.recommend(queries)]
    assert [(r.item_ids, r.scores, r.strategy) for r in second.pipeline.recommend(queries)] == expected
    kernels = first.card.kernels
    assert kernels == second.card.kernels and kernels["machine"] == platform.machine()
    simd = np.show_config(mode="dicts")["SIMD Extensions"]
    if pinned_environment({}, platform.machine(), simd):  # an x86-64 machine with AVX2: the pins held
        assert kernels["blas"] == ["Haswell"]
        assert not {"X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F"} & set(kernels["numpy_simd"])
