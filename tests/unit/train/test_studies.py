"""The studies' settings: ``--set name=value`` reaches the right params, and a wrong name says so."""

from __future__ import annotations

import pytest

from stages.candidates import CandidateParams
from train.ranker_training import DAY, RankerParams
from train.studies import chosen_per_cut, overridden


def test_a_setting_goes_to_the_params_that_have_it_with_its_type():
    settings = ["train_cuts=8", "prior=false", "popular_user_damping=0", "loss=YetiRank", "cold_start_days=none"]
    ranker, candidates = overridden(RankerParams(), CandidateParams(), [*settings, "candidates.seed=7"])
    assert ranker.train_cuts == 8 and type(ranker.train_cuts) is int
    assert ranker.prior is False and ranker.loss == "YetiRank"
    assert candidates.popular_user_damping == 0.0 and candidates.cold_start_days is None
    assert candidates.seed == 7 and ranker.seed == RankerParams().seed  # a shared name goes where it is told
    assert overridden(RankerParams(), CandidateParams(), ["seed=3"])[0].seed == 3  # ... to the ranker by default


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("leaf_estimation_iterations=10", "expected name=value"),
        ("train_cuts", "expected name=value"),
        ("train_cuts=", "expected name=value"),
        ("train_cuts=0.5", "expected a whole number"),
        ("prior=yes", "expected true or false"),
        ("popular_user_damping=half", "could not convert"),
    ],
)
def test_a_setting_neither_params_has_or_cannot_hold_is_refused(setting, message):
    with pytest.raises(SystemExit, match=message):
        overridden(RankerParams(), CandidateParams(), [setting])


def test_settings_are_chosen_at_each_cut_from_cuts_whose_horizon_ended():
    # Weekly cuts, a 14-day horizon: at cut i only cuts up to i - 2 are known.
    cuts = [n * 7 * DAY for n in range(5)]
    scores = {("a",): [0.1, 0.9, 0.1, 0.1, 0.9], ("b",): [0.5, 0.0, 0.7, 0.5, 0.0]}
    chosen = chosen_per_cut(scores, cuts, 14)
    # Cuts 0 and 1: nothing known, the defaults. Cut 2 knows cut 0 (b 0.5 > a 0.1); cut 3 knows 0-1 (a 0.5 >
    # b 0.25); cut 4 knows 0-2 (b 0.4 > a 0.37): its own 0.9 for a, and cut 3's, are never read.
    assert chosen == [("a",), ("a",), ("b",), ("a",), ("b",)]
