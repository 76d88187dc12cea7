"""The studies' settings: ``--set name=value`` reaches the right params, and a wrong name says so."""

from __future__ import annotations

import pytest

from stages.candidates import CandidateParams
from train.ranker_training import DAY, RankerParams
from train.studies import chosen_per_cut, overridden


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


def test_settings_are_chosen_at_each_cut_from_cuts_whose_horizon_ended():
    # Weekly cuts, a 14-day horizon: at cut i only cuts up to i - 2 are known.
    cuts = [n * 7 * DAY for n in range(5)]
    scores = {("a",): [0.1, 0.9, 0.1, 0.1, 0.9], ("b",): [0.5, 0.0, 0.7, 0.5, 0.0]}
    chosen = chosen_per_cut(scores, cuts, 14)
    # Cuts 0 and 1: nothing known, the defaults. Cut 2 knows cut 0 (b 0.5 > a 0.1); cut 3 knows 0-1 (a 0.5 >
    # b 0.25); cut 4 knows 0-2 (b 0.4 > a 0.37): its own 0.9 for a, and cut 3's, are never read.
    assert chosen == [("a",), ("a",), ("b",), ("a",), ("b",)]
