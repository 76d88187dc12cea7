"""benchmarks.experiment_power: the simulated truth is what it says, and the detectors find what is there."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiment_power import (
    hit_rate,
    interleaving_detected,
    main,
    propensities,
    quality_for,
    split_detected,
)


@pytest.mark.parametrize("shape", [0.0, 0.5])
def test_the_quality_found_gives_the_hit_rate_asked_for(shape):
    quality = quality_for(0.3, 10, shape)
    users = propensities(shape, (200_000,), np.random.default_rng(1))
    assert hit_rate(quality, 10, users) == pytest.approx(0.3, abs=0.005)
    assert propensities(shape, (200_000,), np.random.default_rng(2)).mean() == pytest.approx(1.0, abs=0.01)


def test_no_difference_is_rarely_detected_and_a_large_one_always():
    rng = np.random.default_rng(0)
    qa = quality_for(0.3, 10, 0.5)
    # One-sided at 2.5%: 200 runs with no difference.
    assert split_detected(2000, qa, qa, 10, 200, 0.5, rng).mean() <= 0.06
    assert interleaving_detected(2000, qa, qa, 10, 200, 0.5, rng).mean() <= 0.06
    better = quality_for(0.45, 10, 0.5)
    assert split_detected(2000, qa, better, 10, 50, 0.5, rng).all()
    assert interleaving_detected(2000, qa, better, 10, 50, 0.5, rng).all()
    assert not interleaving_detected(2000, better, qa, 10, 50, 0.5, rng).any()  # a better team a is not b's win


def test_the_command_prints_its_three_findings_and_refuses_bad_settings(capsys):
    assert main(["--runs", "10", "--aa-users", "200", "--lift", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "A/A:" in out and "A/B split:" in out and "interleaving:" in out
    assert main(["--hit-rate", "0.99", "--lift", "0.05"]) == 2
    assert "--hit-rate x (1 + --lift)" in capsys.readouterr().err
