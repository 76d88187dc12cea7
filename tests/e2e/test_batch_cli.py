"""The offline batch CLI (`python -m serving.batch`) run end to end: its answers are the pipeline's."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stages.pipeline import Query
from tests.support import REPO

pytestmark = pytest.mark.slow


def test_batch_cli_matches_pipeline(movielens_run, tmp_path, offline):
    users = tmp_path / "users.txt"
    users.write_text("196\n1\nnew-user\n")
    out = tmp_path / "recs.parquet"
    subprocess.run(
        [sys.executable, "-m", "serving.batch", "--out", str(out), "--k", "5", "--users", str(users)],
        cwd=REPO,
        env={**os.environ, "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag},
        check=True,
    )
    table = pd.read_parquet(out)
    expected = offline.pipeline.recommend([Query(u, k=5) for u in ("196", "1", "new-user")])
    for answer in expected:
        rows = table[table["user_id"] == answer.user_id].sort_values("rank")
        assert rows["item_id"].tolist() == answer.item_ids
        assert rows["strategy"].unique().tolist() == [answer.strategy]
    assert np.isfinite(table["score"]).all()


def test_batch_cli_takes_filters(movielens_run, tmp_path, offline):
    users = tmp_path / "users.txt"
    users.write_text("196\nnew-user\n")
    out = tmp_path / "recs.parquet"
    env = {**os.environ, "RECSYS_RANKER_TAG": movielens_run[0].ranker_tag}
    command = [sys.executable, "-m", "serving.batch", "--out", str(out), "--k", "5", "--users", str(users)]
    rules = '{"genres": {"include": ["Film-Noir"]}}'
    subprocess.run([*command, "--filters", rules], cwd=REPO, env=env, check=True)
    table = pd.read_parquet(out)
    catalogue, index = offline.view.catalogue, offline.candidates.item_index
    noir = catalogue.matrices["genres"][:, catalogue.values["genres"]["Film-Noir"]]
    assert len(table) == 10 and all(noir[index[i]] for i in table["item_id"])
    bad = subprocess.run(
        [*command, "--filters", '{"colour": {"include": ["red"]}}'], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown item attribute 'colour'" in bad.stderr
