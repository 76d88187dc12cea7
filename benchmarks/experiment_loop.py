"""An online experiment's loop closed over a real server, on data whose truth is known.

The synthetic generator plants taste clusters (``features.synthetic``); two
model pairs are trained on its data, a strong one (the defaults) and a
weaker one (``PAIRS``), in a model store of their own under ``--work``.
A real ``bentoml serve`` then runs one experiment of five equal arms:

- ``control``: the strong pair; ``same``: the strong pair again (an A/A arm);
- ``weaker``: the weaker pair; ``popular``: the popularity baseline;
- ``mixed``: the strong (team a) and the weaker (team b) interleaved;

and a shadow scoring 10% of requests with the weaker pair. Simulated users
ask ``/recommend`` once each (k = 10) and take each shown item
independently with a known chance: their propensity (Gamma, mean 1, shape
``--shape``) x ``IN_CLUSTER`` or ``OUT_OF_CLUSTER`` (the item in the user's
planted cluster or not) x the position's weight 1 / log2(position + 1); each
taken item is posted to ``/feedback`` with the answer's ``request_id``. The
server's event log is read back and reported by ``train.experiments``.

After the loop, every user is asked once more through every arm, forced
(``X-Recsys-Arm``: the report leaves those lists out): a model's truth is
its lists for the whole population, since an arm's own users differ from
another's by chance. Checked against that truth:

- each arm's true hit rate (1 - prod(1 - chance) over the population's
  lists) and whether the report's 95% interval of its difference from
  control covers the true one;
- A/A: every user's control list, split into two arms at random and its
  takes drawn again from the truth, ``--redraws`` times, each through
  ``experiment_report``: how often the halves differ (5% expected);
- users for 80% power: users resampled with their lists, takes drawn again:
  the A/B split of control and weaker, and the interleaving of the two;
  the ratio is interleaving's gain on this data.

    python -m benchmarks.experiment_loop --users 3000 --out docs/bench/experiment_loop/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import re

# B404 (bandit): runs the training CLI, fixed argv
import subprocess  # nosec B404
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.experiment_power import position_weights, propensities, users_needed
from benchmarks.servers import recommender
from benchmarks.serving import BIN, REPO
from features import synthetic
from features.events import FEEDBACK, IMPRESSIONS, read_events
from train.experiments import Z95, experiment_report, interleaving_report, shadow_report

IN_CLUSTER, OUT_OF_CLUSTER = 0.15, 0.015  # chance of taking an item at position 1, for a user of propensity 1
# The pairs trained: the defaults; a weaker one (fewer factors and trees, no co-occurrence source); a peer as strong
# as the first, from another seed (what a two-arm service's cost is measured with).
PAIRS = {
    "strong": [],
    "weaker": ["--factors=4", "--ranker-iterations=10", "--n-cooc=0", "--seed=7"],
    "peer": ["--seed=7"],
}
K = 10


def data_config(users: int) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(n_users=users, n_items=max(users // 6, 200), n_interactions=users * 20)


def trained(work: Path, users: int, names: tuple[str, ...] = ("strong", "weaker")) -> dict[str, str]:
    """Each named pair's ranker tag (``PAIRS``), trained once on the synthetic data into ``work``'s own model store."""
    marker = work / "rankers.json"
    tags = json.loads(marker.read_text()) if marker.exists() else {}
    if tags.get("users") != users:
        tags = {"users": users}
    files = synthetic.write(synthetic.generate(data_config(users)), work / "data")
    data = [f"--{name}={path}" for name, path in files.items()]
    for name in names:
        if name in tags:
            continue
        places = [f"--feature-store={work / f'features-{name}'}", f"--report-dir={work / f'report-{name}'}"]
        command = [str(BIN / "python"), "-m", "train", *data, *places, "--train-cuts=1", "--backtest-cuts=1"]
        print(f"training the {name} pair ...", flush=True)
        # B603 (bandit): argv built here, no shell
        done = subprocess.run(command + PAIRS[name], cwd=REPO, env=env_of(work), check=True, capture_output=True,
                              text=True)  # fmt: skip  # nosec B603
        saved = re.search(r"saved recsys-candidates:\S+, (recsys-ranker:[a-z0-9]+)", done.stdout)
        if saved is None:
            raise RuntimeError(f"training the {name} pair saved no ranker:\n{done.stdout[-2000:]}")
        tags[name] = saved.group(1)
        marker.write_text(json.dumps(tags))
    return {name: tags[name] for name in names}


def env_of(work: Path) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(work / "bentoml")}


def experiment(strong: str, weaker: str) -> dict:
    arms = [
        {"name": "control", "weight": 1},
        {"name": "same", "weight": 1, "ranker": strong},
        {"name": "weaker", "weight": 1, "ranker": weaker},
        {"name": "popular", "weight": 1, "strategy": "popular"},
        {"name": "mixed", "weight": 1, "interleave": [None, weaker]},
    ]
    return {"name": "loop", "arms": arms, "shadow": {"name": "weaker-shadow", "ranker": weaker, "share": 0.1}}


class Truth:
    """The chance that a simulated user takes an item shown at a position: known, not learned."""

    def __init__(self, config: synthetic.SyntheticConfig, shape: float, seed: int) -> None:
        self.user_clusters, self.item_clusters = synthetic.clusters(config)
        self.propensity = propensities(shape, (config.n_users,), np.random.default_rng([seed, 1]))

    def chance(self, users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Vectorised over rows: user ids ``u<n>``, item ids ``i<n>``, 1-based positions."""
        u = np.array([int(user[1:]) for user in users])
        i = np.array([int(item[1:]) for item in items])
        affinity = np.where(self.user_clusters[u] == self.item_clusters[i], IN_CLUSTER, OUT_OF_CLUSTER)
        return np.minimum(self.propensity[u] * affinity * position_weights(K)[positions - 1], 1.0)


def closed_loop(url: str, users: list[str], truth: Truth, seed: int, threads: int = 8) -> dict:
    """Every user asks once and takes what the truth says; failed requests counted (there must be none)."""
    rng = np.random.default_rng([seed, 2])
    draws = {user: rng.random(K) for user in users}  # drawn up front: the same takes whatever the thread order

    def one(user: str, client: httpx.Client) -> tuple[int, int]:
        response = client.post("/recommend", json={"user_id": user, "k": K})
        if response.status_code != 200:
            return 1, 0
        answer = response.json()
        items = np.array([item["item_id"] for item in answer["recommendations"]])
        if not len(items):
            return 0, 0
        chance = truth.chance(np.full(len(items), user), items, np.arange(1, len(items) + 1))
        taken = items[draws[user][: len(items)] < chance]
        events = [{"user_id": user, "item_id": str(item), "request_id": answer["request_id"]} for item in taken]
        if events and client.post("/feedback", json={"events": events}).status_code != 200:
            return 1, 0
        return 0, len(events)

    def share(part: list[str]) -> tuple[int, int]:
        failed = taken = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            for user in part:
                f, t = one(user, client)
                failed, taken = failed + f, taken + t
        return failed, taken

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(share, [users[n::threads] for n in range(threads)]))
    return {
        "requests": len(users),
        "failed": sum(f for f, _ in results),
        "items_taken": sum(t for _, t in results),
        "seconds": round(time.perf_counter() - start, 1),
    }


def every_arm_for_everyone(url: str, users: list[str], arms: list[str], truth: Truth) -> pd.DataFrame:
    """Every user's list from every arm, forced (``X-Recsys-Arm``), one row per item with the truth's chance.

    The truth of a model is its lists for the whole population: an arm's own users differ from another arm's by
    chance, and that difference is not the models'. Forced lists are left out of the report, so this does not
    touch the experiment it checks.
    """
    rows = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for arm in arms:
            for start in range(0, len(users), 100):  # a batch holds at most 100
                batch = {"requests": [{"user_id": user, "k": K} for user in users[start : start + 100]]}
                response = client.post("/recommend_batch", json=batch, headers={"X-Recsys-Arm": arm})
                for answer in response.raise_for_status().json()["results"]:
                    rows += [{"arm": arm, "request_id": answer["request_id"], "user_id": answer["user_id"],
                              "item_id": item["item_id"], "position": position, "team": item.get("team")}
                             for position, item in enumerate(answer["recommendations"], start=1)]  # fmt: skip
    lists = pd.DataFrame(rows)
    chance = truth.chance(lists["user_id"].to_numpy(), lists["item_id"].to_numpy(), lists["position"].to_numpy())
    return lists.assign(chance=chance)


def true_hit_rates(shown: pd.DataFrame) -> pd.Series:
    """Per arm: the expected share of its lists with an item taken, from the truth."""
    miss = shown.assign(miss=1 - shown["chance"]).groupby(["arm", "request_id"])["miss"].prod()
    return (1 - miss).groupby(level="arm").mean()


def redrawn(shown: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Feedback drawn again for the same shown lists: what another run of the same users would have taken."""
    taken = shown[rng.random(len(shown)) < shown["chance"]]
    return taken[["request_id", "user_id", "item_id"]].assign(timestamp=int(time.time()))


def aa_false_positives(population: pd.DataFrame, redraws: int, seed: int) -> float:
    """Share of A/A experiments whose report finds a difference (95%): 5% expected.

    Each redraw splits every user's ``control`` list into two arms at random, draws the takes again from the
    truth, and runs ``experiment_report`` on them as logged: the true difference is exactly 0.
    """
    rng = np.random.default_rng([seed, 3])
    control = population[population["arm"] == "control"]
    pool = control.assign(logged_at=0.0, score=0.0, strategy="two_stage", model="strong", experiment="aa",
                          arm_forced=False, shadow=False)  # fmt: skip
    users = pool["user_id"].unique()
    wrong = 0
    for _ in range(redraws):
        relabelled = dict(zip(users, np.where(rng.random(len(users)) < 0.5, "control", "same"), strict=True))
        impressions = pool.assign(arm=pool["user_id"].map(relabelled), arm_share=0.5)
        arms, _ = experiment_report(impressions, redrawn(impressions, rng))
        same = arms.set_index("arm").loc["same"]
        wrong += int(same["hit_rate_low"] > 0 or same["hit_rate_high"] < 0)
    return wrong / redraws


def list_chances(shown: pd.DataFrame, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """An arm's lists as (lists, K) arrays of chances and of 'team b placed it' (0 chance pads a short list)."""
    rows = shown[shown["arm"] == arm].sort_values(["request_id", "position"])
    lists = rows["request_id"].drop_duplicates().to_numpy()
    index = {request: n for n, request in enumerate(lists)}
    chances, team_b = np.zeros((len(lists), K)), np.zeros((len(lists), K), dtype=bool)
    slot, column = rows["request_id"].map(index).to_numpy(), rows["position"].to_numpy() - 1
    chances[slot, column] = rows["chance"].to_numpy()
    team_b[slot, column] = (rows["team"] == "b").to_numpy()
    return chances, team_b


def split_detector(control: np.ndarray, treated: np.ndarray, sign: float, runs: int) -> Callable:
    """Detected(users, rng): per run, whether users split in two find the treated arm's true direction (95%)."""

    def detected(users: int, rng: np.random.Generator) -> np.ndarray:
        half = max(users // 2, 2)
        a = control[rng.integers(0, len(control), (runs, half))]
        b = treated[rng.integers(0, len(treated), (runs, half))]
        hits_a, hits_b = (rng.random(a.shape) < a).any(axis=2), (rng.random(b.shape) < b).any(axis=2)
        diff = (hits_b.mean(axis=1) - hits_a.mean(axis=1)) * sign
        spread = np.sqrt(hits_a.var(axis=1, ddof=1) / half + hits_b.var(axis=1, ddof=1) / half)
        return diff - Z95 * spread > 0

    return detected


def interleaving_detector(chances: np.ndarray, team_b: np.ndarray, sign: float, runs: int) -> Callable:
    """Detected(users, rng): per run, whether b's share of won lists is on the true side of 0.5 (95%)."""

    def detected(users: int, rng: np.random.Generator) -> np.ndarray:
        pick = rng.integers(0, len(chances), (runs, users))
        taken = rng.random((runs, users, K)) < chances[pick]
        credit_b, credit_a = (taken & team_b[pick]).sum(axis=2), (taken & ~team_b[pick]).sum(axis=2)
        b_wins, a_wins = (credit_b > credit_a).sum(axis=1), (credit_a > credit_b).sum(axis=1)
        decided = np.maximum(b_wins + a_wins, 1)
        share = b_wins / decided
        found = (share - 0.5) * sign - Z95 * np.sqrt(share * (1 - share) / decided) > 0
        return found & (b_wins + a_wins > 0)  # no list decided: nothing found

    return detected


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, default=3000, help="synthetic users; each asks once")
    cli.add_argument("--shape", type=float, default=0.5, help="Gamma shape of users' propensities (0: all alike)")
    cli.add_argument(
        "--redraws", type=int, default=200, help="A/A redraws through the report, and runs per power point"
    )
    cli.add_argument("--power", type=float, default=0.8)
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--work", type=Path, default=Path("var/experiment_loop"), help="data, models and logs go here")
    cli.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = cli.parse_args(argv)
    if args.users < 600 or args.redraws < 10 or args.shape < 0:
        print("error: --users at least 600, --redraws at least 10, --shape 0 or more", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    strong, weaker = trained(args.work, args.users).values()
    config = data_config(args.users)
    truth = Truth(config, args.shape, args.seed)
    events, spec = args.work / f"events-{int(time.time())}", args.work / "experiments.json"
    spec.write_text(json.dumps(experiment(strong, weaker)))
    env = {**env_of(args.work), "RECSYS_RANKER_TAG": strong, "RECSYS_FEATURE_STORE": str(args.work / "features-strong"),
           "RECSYS_EXPERIMENTS": str(spec), "RECSYS_EVENT_LOG": str(events), "RECSYS_REFRESH_SECONDS": "0"}  # fmt: skip
    users = [f"u{n}" for n in range(config.n_users)]
    with recommender(env, args.work / "serve.log", REPO) as (url, _):
        loop = closed_loop(url, users, truth, args.seed)
        population = every_arm_for_everyone(url, users, ["control", "same", "weaker", "popular", "mixed"], truth)
    print(f"closed loop: {loop}", flush=True)  # the server has stopped: its event log is flushed

    impressions = read_events(str(events), IMPRESSIONS).to_pandas()
    feedback = read_events(str(events), FEEDBACK).to_pandas()
    arms, checks = experiment_report(impressions, feedback)
    true = true_hit_rates(population)
    by_arm = arms.set_index("arm")
    by_arm["true_hit_rate"] = true
    by_arm["true_diff"] = true - true["control"]
    by_arm["covered"] = (by_arm["hit_rate_low"] <= by_arm["true_diff"]) & (
        by_arm["true_diff"] <= by_arm["hit_rate_high"]
    )
    table = by_arm.reset_index()[["arm", "users", "hit_rate", "true_hit_rate", "hit_rate_diff", "hit_rate_low",
                                  "hit_rate_high", "true_diff", "covered"]]  # fmt: skip
    interleaving = interleaving_report(impressions, feedback)
    # The shadow (the weaker pair) against the lists the control arm showed: the other arms' lists are other models.
    is_control = (impressions["arm"] == "control") & ~impressions["arm_forced"].fillna(False).astype(bool)
    control_requests = impressions.loc[is_control, "request_id"]
    shadows = shadow_report(impressions[impressions["request_id"].isin(control_requests)], feedback)
    print(table.round(4).to_string(index=False))
    print(checks.to_string(index=False))
    print(interleaving.round(4).to_string(index=False))
    print(shadows.round(4).to_string(index=False), flush=True)

    aa_rate = aa_false_positives(population, args.redraws, args.seed)
    print(f"A/A: {aa_rate:.1%} of {args.redraws} redraws found 'same' different from 'control' (5% expected)")
    control_lists, _ = list_chances(population, "control")
    weaker_lists, _ = list_chances(population, "weaker")
    mixed_lists, mixed_team_b = list_chances(population, "mixed")
    sign = float(np.sign(true["weaker"] - true["control"])) or 1.0
    split_users, split_power = users_needed(
        split_detector(control_lists, weaker_lists, sign, args.redraws), args.power, args.seed
    )
    mixed_users, mixed_power = users_needed(
        interleaving_detector(mixed_lists, mixed_team_b, sign, args.redraws), args.power, args.seed
    )
    print(f"A/B split, control against weaker (true difference {true['weaker'] - true['control']:+.4f}): "
          f"{split_users:,} users for {split_power:.0%} power")  # fmt: skip
    print(f"interleaving of the two: {mixed_users:,} users for {mixed_power:.0%}: "
          f"{split_users / mixed_users:.1f}x fewer")  # fmt: skip
    result = {
        "users": args.users, "shape": args.shape, "redraws": args.redraws, "seed": args.seed,
        "in_cluster": IN_CLUSTER, "out_of_cluster": OUT_OF_CLUSTER, "rankers": {"strong": strong, "weaker": weaker},
        "closed_loop": loop, "population_lists": int(population["request_id"].nunique()),
        "arms": table.to_dict(orient="records"), "checks": checks.to_dict(orient="records"),
        "interleaving": interleaving.to_dict(orient="records"), "shadows": shadows.to_dict(orient="records"),
        "aa_false_positive_rate": aa_rate, "split_users_for_power": split_users, "split_power": split_power,
        "interleaving_users_for_power": mixed_users, "interleaving_power": mixed_power,
        "interleaving_gain": round(split_users / mixed_users, 1),
    }  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0 if loop["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
