"""`python -m train` on every time prefix of MovieLens-100K from 40% up: a saved model or exit 2, never a crash.

At the 60% and 70% prefixes the backtest once chose "popularity over all
time" for cold start and the save crashed on the card's ``None`` after
minutes of training. The backtest here is the real one (rolling cuts over
the second half, every cold-start option weighed); only the ranker is cut
short (few trees, one training cut), to keep the four runs quick. That the
card saves whichever cold start is chosen is tests/unit/stages/test_card.py.
"""

from __future__ import annotations

import bentoml
import pytest

from features import movielens
from features.schema import Columns
from train.__main__ import EXIT_BAD_DATA, main

pytestmark = pytest.mark.slow
QUICK = ["--ranker-iterations", "30", "--fold-iterations", "15", "--train-cuts", "1", "--backtest-cuts", "4"]


@pytest.fixture(scope="module")
def movielens_files(tmp_path_factory):
    data = movielens.load()
    root = tmp_path_factory.mktemp("movielens-prefixes")
    data.users.reset_index().to_csv(root / "users.csv", index=False)
    items = data.items.reset_index()
    items["genres"] = items["genres"].map("|".join)
    items.to_csv(root / "items.csv", index=False)
    return data.interactions, root


@pytest.mark.parametrize("share", [0.4, 0.5, 0.6, 0.7])
def test_a_prefix_trains_and_saves_or_exits_2_with_a_message(movielens_files, tmp_path, share, capsys):
    interactions, root = movielens_files
    times = interactions[Columns.timestamp]
    end = times.min() + share * (times.max() - times.min())
    path = tmp_path / "interactions.csv"
    interactions[times < end].to_csv(path, index=False)
    before = {str(m.tag) for m in bentoml.models.list()}
    code = main(
        [
            "--interactions", str(path), "--users", str(root / "users.csv"), "--items", str(root / "items.csv"),
            "--feature-store", str(tmp_path / "feature_store"), "--report-dir", str(tmp_path / "reports"), *QUICK,
        ]
    )  # fmt: skip
    output = capsys.readouterr()
    new = {str(m.tag) for m in bentoml.models.list()} - before
    if code == 0:
        assert {tag.split(":")[0] for tag in new} == {"recsys-candidates", "recsys-ranker"}
        assert "Cold start chosen by the backtest" in output.out
    else:
        assert code == EXIT_BAD_DATA and output.err.startswith("error: ") and not new
    assert "Traceback" not in output.out + output.err
