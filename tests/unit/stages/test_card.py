"""The model card: every value a card can hold is saved to the real model store and read back unchanged."""

from __future__ import annotations

import bentoml
import pytest

from stages.candidates import CandidateParams
from stages.card import CANDIDATES_MODEL, CandidatesCard, CardError, RankerCard
from stages.feature_view import FeatureNames
from train.backtest import COLD_START_WINDOWS, SEGMENT_WEIGHTS

COMMON = {"dataset": "d", "data_fingerprint": "f", "trained_at": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize("days", COLD_START_WINDOWS)
@pytest.mark.parametrize("weight", SEGMENT_WEIGHTS)
def test_every_cold_start_option_the_backtest_can_choose_is_saved(tmp_path, days, weight):
    # "All time" is None: BentoML's metadata refuses None, which crashed training at its very end.
    params = CandidateParams(cold_start_days=days, segment_weight=weight)
    card = CandidatesCard(**COMMON, params=params, n_users=1, n_items=2, n_interactions=3)
    with bentoml.models.create(CANDIDATES_MODEL, metadata=card.to_metadata()) as model:
        (tmp_path / "x").write_text("x")
    stored = bentoml.models.get(model.tag)
    assert CandidatesCard.from_metadata(stored.info.metadata) == card
    ranker = RankerCard(
        **COMMON,
        candidates_tag=str(model.tag),
        feature_version="v",
        features=FeatureNames(("a",), ()),
        n_candidates=10,
        evaluation={"backtest": {"cold_start": {"days": days, "segment_weight": weight}, "note": None}},
        timings={},
    )
    with bentoml.models.create("recsys-ranker-card-test", metadata=ranker.to_metadata()) as saved:
        pass
    assert RankerCard.from_metadata(bentoml.models.get(saved.tag).info.metadata) == ranker
    bentoml.models.delete(saved.tag)
    bentoml.models.delete(model.tag)


@pytest.mark.parametrize("version", [2, 3])  # 3: made before the popular source's damping was recorded
def test_an_older_card_says_to_retrain(version):
    with pytest.raises(CardError, match="retrain"):
        CandidatesCard.from_metadata({"card_version": version, "card": "{}"}, "old:1")


def test_a_version_4_card_is_still_read():
    """Version 5 only lets a prior read the ALS score: a version-4 card, its prior on popularity alone, serves."""
    old = CandidatesCard(**COMMON, card_version=4, params=CandidateParams(), n_users=1, n_items=2, n_interactions=3)
    assert old.to_metadata()["card_version"] == 4
    assert CandidatesCard.from_metadata(old.to_metadata(), "v4:1") == old
    assert CandidatesCard(**COMMON, params=CandidateParams(), n_users=1, n_items=2, n_interactions=3).card_version == 5
