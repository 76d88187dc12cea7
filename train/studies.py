"""What each part of the model is worth, on the rolling backtest: an ablation table and a learning curve.

    python -m train.studies ablation          # each feature family, the prior and each extra candidate source
    python -m train.studies learning-curve    # NDCG against the number of training cuts; a plot in docs/
    python -m train.studies periods --set popular_user_damping=0 --set train_cuts=4
                                              # the backtest on earlier periods (the data cut at 50%, 75% of its span)
    python -m train.studies nested --grid train_cuts=4,8 --grid popular_user_damping=0.5,0
                                              # settings chosen at each cut from the cuts before it only

Every row is a whole rolling backtest (train/backtest.py) on MovieLens-100K
with one thing changed, so a gain is measured the way the model is judged:
warm users, NDCG@10, mean over the cuts. The ablation also measures what the
part costs a lone request in-process: the full model's last fold and the
variant's, called in turn on the same users, thread CPU time per call.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from features import movielens
from features.schema import Columns, Dataset
from stages.candidates import CandidateParams
from stages.pipeline import Query, TwoStageRecommender
from train.backtest import (
    TWO_STAGE_MODEL,
    BacktestParams,
    backtest_cuts,
    compare,
    cuts_known_at,
    fitted_folds,
    run_backtest,
)
from train.evaluate import K
from train.kernels import restart_with_pinned_kernels
from train.ranker_training import RankerParams, Stages

SHORT, LONG = "14 days", "all after the cut"
COST_CALLS = 400  # lone requests per pipeline for the cost column


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a name and what it changes."""

    name: str
    ranker: RankerParams
    candidates: CandidateParams


def variants(stages: Stages) -> list[Variant]:
    """The full model, then each part taken out: every feature family, the prior, each extra candidate source."""
    full_ranker, full_candidates = RankerParams(), CandidateParams()
    view = stages.at(None).view
    out = [Variant("full model", full_ranker, full_candidates)]
    for family in view.families:
        columns = tuple(c.name for c in family.columns())
        if columns:
            out.append(
                Variant(f"without {family.name}", replace(full_ranker, exclude_features=columns), full_candidates)
            )
    out.append(Variant("without the popularity prior", replace(full_ranker, prior=False), full_candidates))
    out.append(Variant("without the popular source", full_ranker, replace(full_candidates, n_popular=0)))
    out.append(Variant("without the co-consumption source", full_ranker, replace(full_candidates, n_cooc=0)))
    return out


def warm_means(backtest: dict[str, Any]) -> tuple[float, float, int]:
    """Warm users' mean NDCG@k at both horizons, and the cuts won at the short one."""
    mean = backtest["mean"]
    return (
        mean[SHORT]["warm"][TWO_STAGE_MODEL]["mean"],
        mean[LONG]["warm"][TWO_STAGE_MODEL]["mean"],
        backtest["summary"][SHORT]["warm"]["won"],
    )


def last_fold(stages: Stages, ranker: RankerParams, params: BacktestParams) -> TwoStageRecommender:
    """The pipeline of the backtest's last cut (its rows are cached by then: only the fit runs again)."""
    cut = backtest_cuts(stages.dataset.interactions, params)[-1]
    return next(iter(fitted_folds(stages, [cut], ranker)))[2]


def lone_request_costs(pipelines: list[TwoStageRecommender], users: list[str]) -> list[float]:
    """Median thread CPU microseconds of one lone request, per pipeline.

    Every pipeline answers each user in turn, the order rotated from one user
    to the next, so drift and cache effects hit all of them alike; a warm-up
    first builds each one's row plans.
    """
    for pipeline in pipelines:
        for user in users[:50]:
            pipeline.recommend([Query(user, k=K)])
    times: list[list[float]] = [[] for _ in pipelines]
    order = list(range(len(pipelines)))
    for turn, user in enumerate(users):
        for slot in order[turn % len(order) :] + order[: turn % len(order)]:
            start = time.thread_time_ns()
            pipelines[slot].recommend([Query(user, k=K)])
            times[slot].append((time.thread_time_ns() - start) / 1000)
    return [float(np.median(t)) for t in times]


def ablation(params: BacktestParams) -> str:
    dataset = movielens.load()
    stages = {CandidateParams(): Stages(dataset, CandidateParams(), keep_rows=True)}
    rows, pipelines = [], []
    for variant in variants(stages[CandidateParams()]):
        started = time.perf_counter()
        stage_set = stages.setdefault(variant.candidates, Stages(dataset, variant.candidates, keep_rows=True))
        rows.append((variant.name, *warm_means(run_backtest(stage_set, variant.ranker, params))))
        pipelines.append(last_fold(stage_set, variant.ranker, params))
        print(
            f"  {variant.name}: {rows[-1][1]:.4f} / {rows[-1][2]:.4f}, {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    users = [str(u) for u in pipelines[0].candidates.user_ids[:COST_CALLS]]
    costs = lone_request_costs(pipelines, users)
    (_, full_short, full_long, _) = rows[0]
    lines = [
        f"| model | warm NDCG@{K}, {SHORT} | change | warm NDCG@{K}, {LONG} | change | cuts won ({SHORT}) "
        "| µs per lone request | change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, short, long, won), cost in zip(rows, costs, strict=True):
        lines.append(
            f"| {name} | {short:.4f} | {short - full_short:+.4f} | {long:.4f} | {long - full_long:+.4f} | {won} "
            f"| {cost:.0f} | {cost - costs[0]:+.0f} |"
        )
    return "\n".join(lines)


def learning_curve(params: BacktestParams, counts: list[int], plot: Path | None) -> str:
    stages = Stages(movielens.load(), CandidateParams(), keep_rows=True)
    points = []
    for count in counts:
        short, long, won = warm_means(run_backtest(stages, replace(RankerParams(), train_cuts=count), params))
        points.append((count, short, long, won))
        print(f"  {count} training cuts: {short:.4f} / {long:.4f}", flush=True)
    if plot is not None:
        _plot(points, plot)
    lines = [
        f"| training cuts | warm NDCG@{K}, {SHORT} | warm NDCG@{K}, {LONG} | cuts won ({SHORT}) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {count} | {short:.4f} | {long:.4f} | {won} |" for count, short, long, won in points]
    return "\n".join(lines)


def periods(fractions: list[float], ranker: RankerParams, candidates: CandidateParams) -> str:
    """The backtest on the data cut at each fraction of its time span: periods the full table never scores.

    A change chosen on the full data's cuts must hold on these too (docs/quality.md).
    """
    dataset = movielens.load()
    lines = [f"| data up to | cuts | {WARM_HEADER} |", f"|---|---:|{WARM_ALIGN}|"]
    for fraction in fractions:
        backtest = run_backtest(Stages(prefix_of(dataset, fraction), candidates), ranker, BacktestParams())
        lines.append(f"| {fraction:.0%} | {len(backtest['cuts'])} | {warm_cells(backtest['rows'])} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


WARM_HEADER = " | ".join(f"warm NDCG@{K}, {h} | ratio (95%) | cuts won (clearly lost)" for h in (SHORT, LONG))
WARM_ALIGN = "|".join(["---:"] * 6)


def warm_cells(rows: list[dict[str, Any]]) -> str:
    """Warm users' mean NDCG, ratio to the best list, cuts won (and lost clearly), both horizons, from backtest rows."""
    warm = [r for r in rows if r["segment"] == "warm"]
    summary = compare(warm)
    cells = []
    for horizon in (SHORT, LONG):
        mean = np.mean([r["models"][TWO_STAGE_MODEL][f"ndcg@{K}"] for r in warm if r["horizon"] == horizon])
        s = summary[horizon]["warm"]
        ratio = f"{s['ratio']:.2f}× ({s['low']:.2f}–{s['high']:.2f})"
        cells += [f"{mean:.4f}", ratio, f"{s['won']} of {s['cuts']} ({s['lost_clearly']})"]
    return " | ".join(cells)


def prefix_of(dataset: Dataset, fraction: float) -> Dataset:
    """The data before ``fraction`` of its time span (all of it at 1: the table `python -m train` prints)."""
    if fraction >= 1:
        return dataset
    times = dataset.interactions[Columns.timestamp]
    end = times.min() + fraction * (times.max() - times.min())
    return replace(dataset, interactions=dataset.interactions[times < end].reset_index(drop=True))


def nested(grid: list[str], fraction: float = 1.0) -> str:
    """The backtest of choosing settings on the past alone, against each setting kept fixed.

    Every combination of the ``name=v1,v2`` grid runs the whole rolling
    backtest; at each cut the combination with the best warm 14-day mean over
    the cuts whose horizon had ended by then is the one scored there (before
    any has, the first value of each name). If the served settings were
    chosen by looking at every cut, the nested row says what that look was
    worth: it is what a team choosing week by week would have had.
    """
    axes = [[f"{name}={value}" for value in values.split(",")] for name, _, values in (g.partition("=") for g in grid)]
    combos = [tuple(combo) for combo in itertools.product(*axes)]
    dataset = prefix_of(movielens.load(), fraction)
    horizon = BacktestParams().horizon_days
    runs: dict[tuple[str, ...], dict[str, Any]] = {}
    for combo in combos:
        ranker, candidates = overridden(RankerParams(), CandidateParams(), list(combo))
        runs[combo] = run_backtest(Stages(dataset, candidates), ranker, BacktestParams())
        print(f"  {', '.join(combo)}: {warm_means(runs[combo])[0]:.4f}", flush=True)
    labels = runs[combos[0]]["cuts"]
    cuts = backtest_cuts(dataset.interactions, BacktestParams())

    def warm(combo: tuple[str, ...], label: str, horizon_name: str) -> dict[str, Any]:
        rows = runs[combo]["rows"]
        return next(r for r in rows if r["cut"] == label and r["horizon"] == horizon_name and r["segment"] == "warm")

    def score(combo: tuple[str, ...], label: str) -> float:
        return warm(combo, label, SHORT)["models"][TWO_STAGE_MODEL][f"ndcg@{K}"]

    scores = {combo: [score(combo, label) for label in labels] for combo in combos}
    chosen = chosen_per_cut(scores, cuts, horizon)
    nested_rows = [warm(c, lab, h) for c, lab in zip(chosen, labels, strict=True) for h in (SHORT, LONG)]
    lines = [f"| settings | {WARM_HEADER} |", f"|---|{WARM_ALIGN}|"]
    for name, rows in [*((", ".join(c), runs[c]["rows"]) for c in combos), ("chosen at each cut", nested_rows)]:
        lines.append(f"| {name} | {warm_cells(rows)} |")
    picks = ", ".join(f"{label[:10]}: {'; '.join(c)}" for label, c in zip(labels, chosen, strict=True))
    return "\n".join(lines) + f"\n\nchosen: {picks}"


def chosen_per_cut(
    scores: dict[tuple[str, ...], list[float]], cuts: list[int], horizon_days: int
) -> list[tuple[str, ...]]:
    """Per cut, the key whose scores were best on average over the cuts whose horizon had ended by then.

    Before any has, the first key (the defaults). A cut's own score, and any
    cut whose horizon reaches past it, are never read for its choice.
    """
    keys = list(scores)
    chosen = []
    for cut in cuts:
        known = [cuts.index(c) for c in cuts_known_at(cuts, cut, horizon_days)]
        chosen.append(max(keys, key=lambda k: np.mean([scores[k][p] for p in known])) if known else keys[0])
    return chosen


def overridden(
    ranker: RankerParams, candidates: CandidateParams, settings: list[str]
) -> tuple[RankerParams, CandidateParams]:
    """The params with ``name=value`` settings applied, each parsed as its field's type.

    A name both have (``seed``) goes to the ranker; ``candidates.seed=1``
    (or ``ranker.``) says which. A value the field cannot hold exits with a
    message naming the setting.
    """
    for setting in settings:
        name, _, value = setting.partition("=")
        scope, _, field_name = name.rpartition(".")
        scopes: dict[str, tuple[RankerParams | CandidateParams, ...]] = {
            "ranker": (ranker,),
            "candidates": (candidates,),
            "": (ranker, candidates),
        }
        owners = scopes.get(scope, ())
        target = next((p for p in owners if field_name in p.__dataclass_fields__), None)
        if target is None or not value:
            raise SystemExit(f"--set {setting}: expected name=value with a field of RankerParams or CandidateParams")
        try:
            # Any: the field's own type, known only at run time (replace checks each field's type statically).
            parsed: Any = _as_field(getattr(target, field_name), target.__dataclass_fields__[field_name].type, value)
        except ValueError as error:
            raise SystemExit(f"--set {setting}: {error}") from None
        if target is ranker:
            ranker = replace(ranker, **{field_name: parsed})
        else:
            candidates = replace(candidates, **{field_name: parsed})
    return ranker, candidates


def _as_field(default: object, annotation: object, value: str) -> object:
    """``value`` as the field whose default and (string) annotation are given; ValueError if it cannot be."""
    if value.lower() == "none" and "None" in str(annotation):
        return None
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError("expected true or false")
        return value.lower() == "true"
    if isinstance(default, int) or "int" in str(annotation):
        number = float(value)
        if not number.is_integer():
            raise ValueError("expected a whole number")
        return int(number)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        return tuple(v for v in value.split(",") if v)
    return value


def _plot(points: list[tuple[int, float, float, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(counts, [p[1] for p in points], marker="o", label=f"warm users, {SHORT}")
    ax.plot(counts, [p[2] for p in points], marker="o", label=f"warm users, {LONG}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("training cuts (a week apart) the ranker learns from")
    ax.set_ylabel(f"NDCG@{K}, mean over the backtest's cuts")
    ax.set_title("Learning curve (rolling backtest, MovieLens-100K)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(prog="python -m train.studies", description=__doc__.split("\n\n")[0])
    sub = cli.add_subparsers(dest="study", required=True)
    sub.add_parser("ablation", help="each part taken out in turn")
    curve = sub.add_parser("learning-curve", help="NDCG against the number of training cuts")
    curve.add_argument("--cuts", default="1,2,4,8,16", help="training cut counts, comma-separated")
    curve.add_argument("--plot", type=Path, default=Path("docs/learning_curve.png"))
    period = sub.add_parser("periods", help="the backtest on the data cut at fractions of its time span")
    period.add_argument("--fractions", default="0.5,0.75,1", help="fractions of the time span, comma-separated")
    period.add_argument("--set", action="append", default=[], help="name=value of a RankerParams/CandidateParams field")
    nest = sub.add_parser("nested", help="settings chosen at each cut from the cuts before it, against each fixed")
    nest.add_argument("--grid", action="append", required=True, help="name=v1,v2,...: the first value is the default")
    nest.add_argument("--fraction", type=float, default=1.0, help="the data cut at this fraction of its span")
    args = cli.parse_args(argv)
    params = BacktestParams()
    if args.study == "ablation":
        print(ablation(params))
    elif args.study == "nested":
        print(nested(args.grid, args.fraction))
    elif args.study == "periods":
        ranker, candidates = overridden(RankerParams(), CandidateParams(), args.set)
        print(periods([float(f) for f in args.fractions.split(",")], ranker, candidates))
    else:
        print(learning_curve(params, [int(c) for c in args.cuts.split(",")], args.plot))


if __name__ == "__main__":
    restart_with_pinned_kernels()  # the same model on any AVX2 machine (train/kernels.py)
    main()
