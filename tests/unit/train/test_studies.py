"""The studies' settings: ``--set name=value`` reaches the right params, and a wrong name says so."""

from __future__ import annotations

import pytest

from stages.candidates import CandidateParams
from train.ranker_training import RankerParams
from train.studies import overridden


def test_a_setting_goes_to_the_params_that_have_it_with_its_type():
    ranker, candidates = overridden(
        RankerParams(), CandidateParams(), ["train_cuts=4", "popular_user_damping=0", "loss=YetiRank"]
    )
    assert ranker.train_cuts == 4 and isinstance(ranker.train_cuts, int)
    assert ranker.loss == "YetiRank"
    assert candidates.popular_user_damping == 0.0
    assert (ranker, candidates) != (RankerParams(), CandidateParams())


@pytest.mark.parametrize("setting", ["leaf_estimation_iterations=10", "train_cuts", "train_cuts="])
def test_a_setting_neither_params_has_or_without_a_value_is_refused(setting):
    with pytest.raises(SystemExit, match="expected name=value"):
        overridden(RankerParams(), CandidateParams(), [setting])
