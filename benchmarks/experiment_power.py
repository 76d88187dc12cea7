"""How many users an online experiment needs, and how often it cries wolf: the report's statistics simulated.

Simulated users with a known truth go through the same statistics as
``train.experiments`` (a mean over users, Welch's normal interval; team
draft credit and b's share of won lists). Each user gets one list of
``--k`` items and takes each shown item independently with probability
``quality x the user's propensity x position weight`` (1 / log2(position +
1)). Users differ: propensities are drawn from a Gamma distribution of mean
1 and shape ``--shape`` (0.5: many users who rarely take anything, a few
who take a lot, as in real logs; 0 makes every user alike). Model B's items
are better than model A's by a factor chosen so that B's hit rate (a list
with an item taken) is ``--lift`` above A's.

- **A/A**: both arms model A; ``--runs`` experiments of ``--aa-users`` users
  through the report itself (``experiment_report`` on logged rows): the share
  whose 95% interval excludes 0 is the false-positive rate (5% expected).
- **A/B split**: the users needed for ``--power`` (80%): the share of runs
  whose interval lies above 0, searched over user counts.
- **Interleaving**: the same truth, each user shown A's and B's items merged
  by team draft (serving/experiments.py); the users needed until b's share
  of won lists is above 0.5 with the same power. The ratio of the two is
  interleaving's sensitivity gain.

    python -m benchmarks.experiment_power --runs 200
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from train.experiments import Z95, experiment_report


def position_weights(k: int) -> np.ndarray:
    return 1 / np.log2(np.arange(2, k + 2))


def propensities(shape: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Each user's propensity to take items: Gamma of mean 1 and this shape (0: all 1)."""
    return rng.gamma(shape, 1 / shape, size) if shape > 0 else np.ones(size)


def take_chance(quality: float | np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """P(a user takes the item at each position), (..., k): capped at 1."""
    return np.minimum(np.multiply.outer(users, position_weights(k)) * np.asarray(quality)[..., None], 1.0)


def hit_rate(quality: float, k: int, users: np.ndarray) -> float:
    """Mean over users of P(at least one of k shown items taken)."""
    return float(np.mean(1 - np.prod(1 - take_chance(quality, users, k), axis=-1)))


def quality_for(hit: float, k: int, shape: float) -> float:
    """The per-item quality that gives lists this mean hit rate (bisection over a fixed sample of users)."""
    users = propensities(shape, (50_000,), np.random.default_rng(12345))
    low, high = 0.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if hit_rate(middle, k, users) < hit else (low, middle)
    return (low + high) / 2


def split_detected(users: int, qa: float, qb: float, k: int, runs: int, shape: float, rng: np.random.Generator):
    """Per simulated A/B run (half the users each): whether B's hit rate is above A's, 95% interval above 0."""
    half = users // 2
    hits_a = (rng.random((runs, half, k)) < take_chance(qa, propensities(shape, (runs, half), rng), k)).any(axis=2)
    hits_b = (rng.random((runs, half, k)) < take_chance(qb, propensities(shape, (runs, half), rng), k)).any(axis=2)
    diff = hits_b.mean(axis=1) - hits_a.mean(axis=1)
    spread = np.sqrt(hits_a.var(axis=1, ddof=1) / half + hits_b.var(axis=1, ddof=1) / half)
    return diff - Z95 * spread > 0


def interleaving_detected(users: int, qa: float, qb: float, k: int, runs: int, shape: float, rng: np.random.Generator):
    """Per simulated interleaving run: whether b's share of won lists is above 0.5, 95% interval.

    Two models whose lists share no item: team draft then alternates teams in
    pairs of positions, a coin deciding who goes first in each pair.
    """
    first_is_b = rng.random((runs, users, (k + 1) // 2)) < 0.5
    team_b = np.empty((runs, users, k), dtype=bool)
    team_b[:, :, 0::2] = first_is_b[:, :, : len(range(0, k, 2))]
    team_b[:, :, 1::2] = ~first_is_b[:, :, : len(range(1, k, 2))]
    chance = take_chance(1.0, propensities(shape, (runs, users), rng), k) * np.where(team_b, qb, qa)
    taken = rng.random((runs, users, k)) < np.minimum(chance, 1.0)
    credit_b, credit_a = (taken & team_b).sum(axis=2), (taken & ~team_b).sum(axis=2)
    b_wins, a_wins = (credit_b > credit_a).sum(axis=1), (credit_a > credit_b).sum(axis=1)
    decided = np.maximum(b_wins + a_wins, 1)
    share = b_wins / decided
    return (share - Z95 * np.sqrt(share * (1 - share) / decided) > 0.5) & (b_wins + a_wins > 0)


def users_needed(
    detected: Callable[[int, np.random.Generator], np.ndarray], power: float, seed: int
) -> tuple[int, float]:
    """The fewest users (to 5%) whose runs detect B with at least ``power``: doubling, then bisection.

    ``detected(users, rng)`` simulates runs of that many users and says, per run, whether B was found.
    """
    rng = np.random.default_rng(seed)
    low, high = 0, 64
    while (found := detected(high, rng).mean()) < power:
        low, high = high, high * 2
    while high - low > max(high // 20, 2):
        middle = (low + high) // 2
        found_middle = detected(middle, rng).mean()
        low, high, found = (middle, high, found) if found_middle < power else (low, middle, found_middle)
    return high, float(found)


def logged_aa(users: int, qa: float, k: int, shape: float, rng: np.random.Generator):
    """One A/A experiment's event log: two arms of model A, one list per user, items taken by the truth."""
    arm = np.where(rng.random(users) < 0.5, "control", "same")
    taken = rng.random((users, k)) < take_chance(qa, propensities(shape, (users,), rng), k)
    user_ids = np.repeat([f"u{u}" for u in range(users)], k)
    request_ids = np.repeat([f"r{u}" for u in range(users)], k)
    items = np.tile([f"i{p}" for p in range(k)], users)
    shown = pd.DataFrame(
        {
            "logged_at": 0.0, "request_id": request_ids, "user_id": user_ids, "item_id": items,
            "position": np.tile(np.arange(1, k + 1), users), "score": 0.0, "strategy": "two_stage", "model": "a",
            "experiment": "aa", "arm": np.repeat(arm, k), "arm_share": 0.5, "arm_forced": False,
        }
    )  # fmt: skip
    mask = taken.ravel()
    feedback = pd.DataFrame(
        {"request_id": request_ids[mask], "user_id": user_ids[mask], "item_id": items[mask], "timestamp": 1}
    )
    return shown, feedback


def aa_false_positives(users: int, qa: float, k: int, runs: int, shape: float, seed: int) -> float:
    """Share of A/A runs, through ``experiment_report``, whose hit-rate interval excludes 0."""
    rng = np.random.default_rng(seed)
    wrong = 0
    for _ in range(runs):
        arms, _ = experiment_report(*logged_aa(users, qa, k, shape, rng))
        same = arms.set_index("arm").loc["same"]
        wrong += int(same["hit_rate_low"] > 0 or same["hit_rate_high"] < 0)
    return wrong / runs


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--runs", type=int, default=200, help="simulated experiments per point")
    cli.add_argument("--hit-rate", type=float, default=0.3, help="model A's share of lists with an item taken")
    cli.add_argument("--lift", type=float, default=0.05, help="B's relative lift in hit rate")
    cli.add_argument("--k", type=int, default=10, help="items per list")
    cli.add_argument("--shape", type=float, default=0.5, help="Gamma shape of users' propensities (0: all alike)")
    cli.add_argument("--power", type=float, default=0.8)
    cli.add_argument("--aa-users", type=int, default=2000, help="users per A/A run (through the report)")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = cli.parse_args(argv)
    if not 0 < args.hit_rate * (1 + args.lift) < 1 or args.lift <= 0 or args.runs < 10 or args.shape < 0:
        message = "--hit-rate x (1 + --lift) must be in (0, 1), --lift above 0, --runs at least 10, --shape 0 or more"
        print(f"error: {message}", file=sys.stderr)
        return 2
    qa = quality_for(args.hit_rate, args.k, args.shape)
    qb = quality_for(args.hit_rate * (1 + args.lift), args.k, args.shape)
    false_positives = aa_false_positives(args.aa_users, qa, args.k, args.runs, args.shape, args.seed)
    common = (qa, qb, args.k, args.runs, args.shape)
    split_users, split_power = users_needed(lambda n, rng: split_detected(n, *common, rng), args.power, args.seed)
    mixed_users, mixed_power = users_needed(
        lambda n, rng: interleaving_detected(n, *common, rng), args.power, args.seed
    )
    result = {
        "hit_rate_a": args.hit_rate, "lift": args.lift, "k": args.k, "runs": args.runs, "shape": args.shape,
        "item_quality_a": round(qa, 5), "item_quality_b": round(qb, 5),
        "aa_users": args.aa_users, "aa_false_positive_rate": false_positives,
        "split_users_for_power": split_users, "split_power": split_power,
        "interleaving_users_for_power": mixed_users, "interleaving_power": mixed_power,
        "interleaving_gain": round(split_users / mixed_users, 1),
    }  # fmt: skip
    print(
        f"A/A: {false_positives:.1%} of {args.runs} runs of {args.aa_users:,} users flagged a difference (5% expected)"
    )
    print(f"A/B split: {split_users:,} users detect a {args.lift:.0%} lift in hit rate {split_power:.0%} of the time")
    print(f"interleaving: {mixed_users:,} users, {mixed_power:.0%}: {result['interleaving_gain']}x fewer")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
