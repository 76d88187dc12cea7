"""How the served lists did: impressions joined with the feedback that came after them.

The offline backtest says how a model would do; this says how it did. Each
list the service answered (its impressions, one row per shown item) is
joined with the feedback its user sent afterwards: an item counts as taken
when feedback names the list's ``request_id``, or, without one, when the
user took a shown item within ``window_days`` of the list being served.
Reported per model version (ranker tag) and strategy: lists, hit rate (a
list with at least one item taken), NDCG@k of the shown order, and the share
of shown items taken.

    python -m train.online_report --events var/events
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from features.events import FEEDBACK, IMPRESSIONS, read_events
from features.schema import DAY

WINDOW_DAYS = 7
ARM_COLUMNS = ("experiment", "arm", "arm_share", "arm_forced", "shadow", "session_id")


def taken_per_list(impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float) -> pd.Series:
    """Per shown row, whether the user took that item after the list was shown (see the module doc).

    A list shown to a visitor's session (``session_id``) joins feedback by ``request_id`` only: visitors share a
    ``user_id``, so one visitor's take would otherwise credit every visitor's list that showed the item.
    """
    shown = impressions.reset_index(drop=True)
    by_request = feedback.dropna(subset=["request_id"])[["request_id", "item_id"]].drop_duplicates()
    named = shown.merge(by_request.assign(named=True), on=["request_id", "item_id"], how="left")["named"]
    signed_in = shown["session_id"].isna() if "session_id" in shown else pd.Series(True, index=shown.index)
    later = (
        shown.loc[signed_in, ["user_id", "item_id", "logged_at"]]
        .reset_index()
        .merge(feedback[feedback["request_id"].isna()][["user_id", "item_id", "timestamp"]], on=["user_id", "item_id"])
    )
    in_window = (later["timestamp"] >= later["logged_at"] - 1) & (
        later["timestamp"] < later["logged_at"] + window_days * DAY
    )
    followed = pd.Series(False, index=shown.index)
    followed[later.loc[in_window, "index"].unique()] = True
    return named.fillna(False).astype(bool) | followed


def with_arm_columns(impressions: pd.DataFrame) -> pd.DataFrame:
    """Impressions with every experiment column (null in logs from before experiments were logged)."""
    missing = {column: None for column in ARM_COLUMNS if column not in impressions}
    return impressions.assign(**missing) if missing else impressions


def shown_only(impressions: pd.DataFrame) -> pd.DataFrame:
    """The impressions users saw: an experiment's shadow lists left out."""
    impressions = with_arm_columns(impressions)
    return impressions[~impressions["shadow"].fillna(False).astype(bool)]


def served_lists(impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float) -> pd.DataFrame:
    """One row per served list: who, which model and experiment arm, items taken, NDCG@k of the shown order."""
    impressions = shown_only(impressions)
    shown = impressions.reset_index(drop=True).assign(taken=taken_per_list(impressions, feedback, window_days))
    # The list's own order: positions are places in the whole ranking (a page at offset 10 starts at 11), and
    # the ideal below starts at the list's top, so a later page is scored as the list the user saw.
    place = shown["position"] - shown.groupby("request_id")["position"].transform("min") + 1
    shown["gain"] = shown["taken"] / np.log2(place + 1)
    lists = shown.groupby("request_id").agg(
        model=("model", "first"),
        strategy=("strategy", "first"),
        user_id=("user_id", "first"),
        experiment=("experiment", "first"),
        arm=("arm", "first"),
        arm_share=("arm_share", "first"),
        arm_forced=("arm_forced", "first"),
        session_id=("session_id", "first"),
        hits=("taken", "sum"),
        length=("taken", "size"),
        dcg=("gain", "sum"),
    )
    ideal_hits = np.minimum(lists["hits"], lists["length"]).astype(int)
    ideal = ideal_hits.map(lambda n: float((1 / np.log2(np.arange(2, n + 2))).sum()))
    lists["ndcg"] = np.where(ideal > 0, lists["dcg"] / ideal.where(ideal > 0, 1), 0.0)
    return lists


def report(impressions: pd.DataFrame, feedback: pd.DataFrame, window_days: float = WINDOW_DAYS) -> pd.DataFrame:
    """One row per (model, strategy): lists, users, hit rate, NDCG@k and share of shown items taken."""
    columns = ["model", "strategy", "lists", "users", "hit_rate", "ndcg", "taken_share"]
    if impressions.empty:
        return pd.DataFrame(columns=columns)
    lists = served_lists(impressions, feedback, window_days)
    grouped = lists.groupby(["model", "strategy"], dropna=False)
    out = grouped.agg(
        lists=("hits", "size"),
        users=("user_id", "nunique"),
        hit_rate=("hits", lambda h: float((h > 0).mean())),
        ndcg=("ndcg", "mean"),
        taken=("hits", "sum"),
        shown=("length", "sum"),
    ).reset_index()
    out["taken_share"] = out["taken"] / out["shown"]
    return out[columns]


def markdown(table: pd.DataFrame) -> str:
    """The report as a Markdown table (floats to 4 places)."""
    cells = table.map(lambda v: f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", required=True, help="event log root the service wrote (path or pyarrow URI)")
    parser.add_argument(
        "--window-days", type=float, default=WINDOW_DAYS, help="feedback without a request_id counts this long"
    )
    parser.add_argument("--json", help="also write the table here as JSON")
    args = parser.parse_args(argv)
    impressions = read_events(args.events, IMPRESSIONS).to_pandas()
    feedback = read_events(args.events, FEEDBACK).to_pandas()
    table = report(impressions, feedback, args.window_days)
    print(f"{len(impressions):,} impressions, {len(feedback):,} feedback events under {args.events}\n")
    print(markdown(table) if not table.empty else "no impressions logged yet")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(table.to_dict(orient="records"), out, indent=2)


if __name__ == "__main__":
    main()
