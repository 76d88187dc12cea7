"""How an online experiment's arms did: per arm, hit rate and NDCG of the shown lists, against the control arm.

The service logs every answer of a running experiment with its arm
(serving/experiments.py); feedback joins the lists as in
``train.online_report``. A user (or a visitor's session), not a request, is
what the service assigns to an arm, so each metric is a mean over users of
that user's mean over their lists, and each difference with the control arm has a 95% interval
from the spread between users (Welch's normal approximation). A
sample-ratio-mismatch check compares the users per arm with the arms'
shares (chi-square): a mismatch (p < 0.001) means the assignment or the
logging is broken and the differences cannot be trusted. Answers whose
request forced an arm (QA) are left out and counted apart. An interleaving
arm's lists credit each taken item to the model that placed it
(:func:`interleaving_report`).

    python -m train.experiments --events var/events
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy import stats

from features.events import FEEDBACK, IMPRESSIONS, read_events
from train.online_report import WINDOW_DAYS, markdown, served_lists, shown_only, taken_per_list, with_arm_columns

Z95 = 1.959963984540054
SRM_ALPHA = 0.001  # the usual threshold: a real mismatch is glaring, and many experiments are checked
CONTROL = "control"


def per_unit(lists: pd.DataFrame) -> pd.DataFrame:
    """Each (experiment, arm, unit): lists, share of lists with an item taken, mean NDCG; forced lists left out.

    The unit is what the service assigned: the visitor's session when the request named one, else the user.
    """
    assigned = lists[lists["experiment"].notna() & ~lists["arm_forced"].fillna(False).astype(bool)]
    unit = ("session:" + assigned["session_id"]).fillna("user:" + assigned["user_id"])
    grouped = assigned.assign(hit=assigned["hits"] > 0, unit=unit).groupby(["experiment", "arm", "unit"])
    return grouped.agg(
        lists=("hit", "size"), hit_rate=("hit", "mean"), ndcg=("ndcg", "mean"), share=("arm_share", "last")
    )


def difference(treated: pd.Series, control: pd.Series) -> tuple[float, float, float]:
    """Difference of two means over users and its 95% interval (Welch's normal approximation)."""
    diff = float(treated.mean() - control.mean())
    spread = np.sqrt(treated.var(ddof=1) / len(treated) + control.var(ddof=1) / len(control))
    return diff, diff - Z95 * float(spread), diff + Z95 * float(spread)


def sample_ratio_p(users: pd.Series, shares: pd.Series) -> float:
    """p-value of the users per arm given the arms' shares (chi-square); 1.0 for a single arm."""
    if len(users) < 2:
        return 1.0
    expected = shares / shares.sum() * users.sum()
    return float(stats.chisquare(users.to_numpy(float), expected.to_numpy(float)).pvalue)


def experiment_report(
    impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float = WINDOW_DAYS, control: str = CONTROL
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per arm: users, lists, hit rate, NDCG and their differences with ``control``; per experiment: the checks.

    An experiment without an arm named ``control`` is compared with its first arm in name order.
    """
    arms_columns = ["experiment", "arm", "share", "users", "lists", "hit_rate", "hit_rate_diff", "hit_rate_low",
                    "hit_rate_high", "ndcg", "ndcg_diff", "ndcg_low", "ndcg_high"]  # fmt: skip
    checks_columns = ["experiment", "control", "users", "sample_ratio_p", "sample_ratio_mismatch", "forced_lists"]
    if impressions.empty or impressions["experiment"].isna().all():
        return pd.DataFrame(columns=arms_columns), pd.DataFrame(columns=checks_columns)
    lists = served_lists(impressions, feedback, window_days)
    users = per_unit(lists)
    arms, checks = [], []
    for experiment, rows in users.groupby(level="experiment"):
        by_arm = {arm: group for arm, group in rows.groupby(level="arm")}
        baseline = control if control in by_arm else sorted(by_arm)[0]
        for arm, group in by_arm.items():
            row = {"experiment": experiment, "arm": arm, "share": float(group["share"].iloc[-1]), "users": len(group),
                   "lists": int(group["lists"].sum())}  # fmt: skip
            for metric in ("hit_rate", "ndcg"):
                diff, low, high = difference(group[metric], by_arm[baseline][metric])
                row |= {metric: float(group[metric].mean()), f"{metric}_diff": diff, f"{metric}_low": low,
                        f"{metric}_high": high}  # fmt: skip
            arms.append(row)
        counts = pd.Series({arm: len(group) for arm, group in by_arm.items()})
        shares = pd.Series({arm: float(group["share"].iloc[-1]) for arm, group in by_arm.items()})
        p = sample_ratio_p(counts, shares)
        forced = lists[(lists["experiment"] == experiment) & lists["arm_forced"].fillna(False).astype(bool)]
        checks.append({"experiment": experiment, "control": baseline, "users": int(counts.sum()), "sample_ratio_p": p,
                       "sample_ratio_mismatch": p < SRM_ALPHA, "forced_lists": len(forced)})  # fmt: skip
    return pd.DataFrame(arms, columns=arms_columns), pd.DataFrame(checks, columns=checks_columns)


def interleaving_report(
    impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float = WINDOW_DAYS
) -> pd.DataFrame:
    """Per interleaving arm: lists where team a's items were taken more, b's more, as much; b's share of the wins.

    Each list credits the model that placed each taken item (its ``team``); the
    list goes to the model with more credit. ``b_preference`` is b's share of
    the lists one model won, with a 95% interval (normal approximation): above
    0.5, users took model b's items more often when both were shown side by side.
    """
    columns = ["experiment", "arm", "lists", "a_wins", "b_wins", "ties", "b_preference", "b_low", "b_high"]
    if impressions.empty or "team" not in impressions or impressions["team"].isna().all():
        return pd.DataFrame(columns=columns)
    impressions = shown_only(impressions)
    shown = impressions.reset_index(drop=True).assign(taken=taken_per_list(impressions, feedback, window_days))
    shown = shown[shown["team"].notna() & ~shown["arm_forced"].fillna(False).astype(bool)]
    credit = (
        shown.assign(a=shown["taken"] & (shown["team"] == "a"), b=shown["taken"] & (shown["team"] == "b"))
        .groupby(["experiment", "arm", "request_id"])[["a", "b"]]
        .sum()
    )
    rows = []
    for (experiment, arm), lists in credit.groupby(level=["experiment", "arm"]):
        a_wins, b_wins = int((lists["a"] > lists["b"]).sum()), int((lists["b"] > lists["a"]).sum())
        decided = a_wins + b_wins
        share = b_wins / decided if decided else float("nan")
        spread = Z95 * np.sqrt(share * (1 - share) / decided) if decided else float("nan")
        rows.append({"experiment": experiment, "arm": arm, "lists": len(lists), "a_wins": a_wins, "b_wins": b_wins,
                     "ties": len(lists) - decided, "b_preference": share, "b_low": share - spread,
                     "b_high": share + spread})  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def shadow_report(impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float = WINDOW_DAYS) -> pd.DataFrame:
    """Per shadow: how its lists compare with the lists shown for the same requests, and with what users took.

    ``overlap`` is the share of a shown list's items the shadow list also has
    (overlap@k), ``rank_correlation`` Spearman's over the items both have (two
    or more); ``shown_hit_rate`` and ``shadow_hit_rate`` the share of lists
    with an item taken that the list holds (replay). Users took what they were
    shown, so the replay favours the shown list: a shadow that matches it there
    is promising, not proven; an A/B arm decides.
    """
    columns = ["experiment", "shadow", "lists", "overlap", "rank_correlation", "shown_hit_rate", "shadow_hit_rate"]
    impressions = with_arm_columns(impressions)
    is_shadow = impressions["shadow"].fillna(False).astype(bool)
    if not is_shadow.any():
        return pd.DataFrame(columns=columns)
    taken = feedback.dropna(subset=["request_id"]).groupby("request_id")["item_id"].agg(set)
    shown = impressions[~is_shadow].groupby("request_id")["item_id"].agg(list)
    rows = []
    for (experiment, name), lists in impressions[is_shadow].groupby(["experiment", "arm"]):
        compared = []
        for request_id, items in lists.sort_values("position").groupby("request_id")["item_id"]:
            if request_id not in shown.index:
                continue
            ours, theirs, took = list(items), shown[request_id], taken.get(request_id, set())
            common = [item for item in theirs if item in ours]
            correlation = (
                stats.spearmanr([theirs.index(i) for i in common], [ours.index(i) for i in common]).statistic
                if len(common) >= 2
                else np.nan
            )
            compared.append((len(common) / max(len(theirs), 1), correlation, bool(took & set(theirs)),
                             bool(took & set(ours))))  # fmt: skip
        table = pd.DataFrame(compared, columns=["overlap", "rank_correlation", "shown_hit", "shadow_hit"])
        means = table.mean()
        rows.append({"experiment": experiment, "shadow": name, "lists": len(table), "overlap": means["overlap"],
                     "rank_correlation": means["rank_correlation"], "shown_hit_rate": means["shown_hit"],
                     "shadow_hit_rate": means["shadow_hit"]})  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def plot(arms: pd.DataFrame, path: str) -> None:
    """Each arm's hit rate and NDCG with the 95% interval of its difference from the control (dashed).

    The bars are the differences' intervals moved onto the arm's mean, so an arm whose bar misses the dashed line
    differs from the control at 95%.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = list(dict.fromkeys(arms["experiment"]))
    figure, axes = plt.subplots(len(experiments), 2, figsize=(9, 1.6 + 0.5 * len(arms)), squeeze=False)
    for row, experiment in zip(axes, experiments, strict=True):
        table = arms[arms["experiment"] == experiment].reset_index(drop=True)
        positions = np.arange(len(table))
        labels = [f"{arm} ({users:,} users)" for arm, users in zip(table["arm"], table["users"], strict=True)]
        for axis, metric in zip(row, ("hit_rate", "ndcg"), strict=True):
            control = float((table[metric] - table[f"{metric}_diff"]).iloc[0])
            below = table[f"{metric}_diff"] - table[f"{metric}_low"]
            above = table[f"{metric}_high"] - table[f"{metric}_diff"]
            axis.errorbar(table[metric], positions, xerr=[below, above], fmt="o", capsize=4)
            axis.axvline(control, linestyle="--", color="grey")
            axis.set_yticks(positions, labels)
            axis.invert_yaxis()
            axis.set_xlabel(metric.replace("_", " "))
            axis.set_title(f"{experiment}: {metric.replace('_', ' ')}, 95% interval vs control")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", required=True, help="event log root the service wrote (path or pyarrow URI)")
    parser.add_argument(
        "--window-days", type=float, default=WINDOW_DAYS, help="feedback without a request_id counts this long"
    )
    parser.add_argument("--control", default=CONTROL, help="the arm the others are compared with")
    parser.add_argument("--json", help="also write the tables here as JSON")
    parser.add_argument("--plot", help="also draw each arm's hit rate and NDCG with their intervals here (PNG)")
    args = parser.parse_args(argv)
    impressions = read_events(args.events, IMPRESSIONS).to_pandas()
    feedback = read_events(args.events, FEEDBACK).to_pandas()
    arms, checks = experiment_report(impressions, feedback, args.window_days, args.control)
    if arms.empty:
        print(f"no experiment answers logged under {args.events}")
        return
    print(markdown(arms) + "\n\n" + markdown(checks))
    interleaving = interleaving_report(impressions, feedback, args.window_days)
    if not interleaving.empty:
        print("\nInterleaving (b_preference above 0.5: model b's items taken more often)\n")
        print(markdown(interleaving))
    shadows = shadow_report(impressions, feedback, args.window_days)
    if not shadows.empty:
        print("\nShadow lists against the lists shown for the same requests (replay favours the shown)\n")
        print(markdown(shadows))
    for check in checks.itertuples():
        if check.sample_ratio_mismatch:
            print(f"\n{check.experiment}: sample ratio mismatch (p = {check.sample_ratio_p:.2g}): do not trust it")
    if args.plot:
        plot(arms, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        with open(args.json, "w") as out:
            tables = {"arms": arms, "checks": checks, "interleaving": interleaving, "shadows": shadows}
            json.dump({name: table.to_dict(orient="records") for name, table in tables.items()}, out)


if __name__ == "__main__":
    main()
