"""One training run: data -> features -> models -> evaluation -> stores."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from features import movielens
from features.compute import FeatureTables
from features.events import with_feedback
from features.schema import Columns, Dataset, load_dataset
from features.store import MODEL_SNAPSHOT_DIR, fingerprint, write_snapshot
from stages.candidates import CandidateModel, CandidateParams, popularity_share
from stages.card import CANDIDATES_MODEL, RANKER_MODEL, CandidatesCard, RankerCard
from stages.memory import give_back_memory
from stages.pipeline import TwoStageRecommender
from stages.ranker import RANKER_FILE, RECENT_RANKER_FILE, VISITOR_RANKER_FILE
from train.backtest import TWO_STAGE_MODEL, WorseThanBaseline, beaten_by, popularity_name, run_backtest
from train.config import TrainConfig
from train.engine import DaskEngine, connect
from train.evaluate import (
    K,
    candidate_recall,
    holdout_rows,
    markdown_table,
    pipeline_lists,
    popularity_lists,
    ranking_metrics,
    rows_of,
    write_report,
)
from train.kernels import kernels_in_use
from train.ranker_training import (
    NotEnoughHistory,
    Rankers,
    Stages,
    common_names,
    example_rows,
    fit_on_examples,
    fit_rankers,
    sample_users,
    taken_after,
)


@dataclass
class RunResult:
    """What a run produced (tags are empty when nothing was saved)."""

    evaluation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, int] = field(default_factory=dict)
    candidates_tag: str = ""
    ranker_tag: str = ""
    feature_version: str = ""


class Steps:
    """Prints each step and its wall time as the run goes."""

    def __init__(self, echo: bool = True) -> None:
        self.timings: dict[str, float] = {}
        self.peak_mb: dict[str, int] = {}
        self.echo = echo

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.echo:
            print(f"→ {name} ...", flush=True)
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.peak_mb[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if self.echo:
            print(f"  {name}: {self.timings[name]:.2f}s (peak memory so far {self.peak_mb[name]} MB)", flush=True)


def load_data(config: TrainConfig) -> Dataset:
    """The configured dataset: the user's files, or MovieLens-100K."""
    dataset = (
        load_dataset(config.interactions, config.users, config.items, config.read_options())
        if config.interactions
        else movielens.load()
    )
    return with_feedback(dataset, config.events, config.allow_any_dates) if config.events else dataset


def per_user_split(config: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    """The secondary evaluation: each user's last ``holdout`` share held out.

    Other users' later activity sits in the training part here, so this
    flatters every model; it is kept for comparison with the literature. Its
    test periods are spread over the whole time span, so the ranker is
    trained the protocol's own way: on a per-user split of the training part
    (time features are then relative to the end of the data, as in the
    protocol), not on global cuts. Its ranker learns from as many users as the
    served one (``max_train_users``): a sample of 300 made it an underfit
    stand-in that lost to ALS at 20M interactions (docs/quality.md).
    """
    params = replace(
        config.ranker_params(),
        iterations=config.fold_iterations or config.ranker_iterations,
        train_cuts=1,  # one labelled stage, not cuts: all the sample's users go to it
    )
    candidate_params = config.candidate_params()
    # One thing at a time, each let go before the next (at 20M interactions this step is the run's peak): the
    # ranker's rows from its stage, then its fit, then the scored stage. The fit and that stage held at once
    # took the run to 8.45 GiB at 20M interactions; apart, 8.03 GiB, and 7.19 GiB with the leaner stage builds
    # (BENCHMARKS.md, "Training memory at 20M"). Each part of the data is a copy, taken only while needed.
    parts = holdout_rows(dataset.interactions, config.holdout)
    before = rows_of(dataset.interactions, parts.before)
    label_stage = Stages(Dataset(before, dataset.users, dataset.items), candidate_params).at(None)
    del before
    labels = taken_after(dataset.interactions, parts.before, parts.after)
    train_rows, test_rows = parts.train, parts.test
    del parts  # the label stage's positions
    label_names, rows = example_rows(label_stage, labels, params)
    names = common_names([label_stage.view.available(), label_names])
    del label_stage, labels
    ranker, fit = fit_on_examples(rows, label_names, names, params, show_progress=False)
    del rows
    give_back_memory()
    train_part = rows_of(dataset.interactions, train_rows)
    stage = Stages(Dataset(train_part, dataset.users, dataset.items), candidate_params).at(None)
    if common_names([stage.view.available(), names]) != names:  # both stages are built from the same tables
        missing = sorted(set(names.all) - set(stage.view.available().all))
        raise ValueError(f"per-user split: the scored stage cannot produce the ranker's columns {missing}")
    pipeline = TwoStageRecommender(stage.candidates, ranker, stage.view, config.n_candidates)
    held_out = taken_after(dataset.interactions, train_rows, test_rows)
    relevant = {u: items for u, items in held_out.items() if u in stage.candidates.user_index}
    del held_out
    if not relevant:
        raise NotEnoughHistory("per-user split: no user has a new item in their held-out part")
    users = sorted(relevant)
    users = [str(u) for u in sample_users(np.array(users, dtype=object), config.max_eval_users, config.seed)]
    relevant = {u: relevant[u] for u in users}
    candidates = stage.candidates
    lists = {
        popularity_name(days): popularity_lists(
            candidates, popularity_share(train_part, candidates.item_ids, None, days), users
        )
        for days in (None, 30)
    }
    lists["ALS"] = pipeline_lists(TwoStageRecommender(candidates, None, stage.view, config.n_candidates), users)
    lists[TWO_STAGE_MODEL] = pipeline_lists(pipeline, users)
    return {
        "split": f"each user's last {config.holdout:.0%} of interactions by time held out",
        "users": len(users),
        "ranker_iterations": params.iterations,
        "ranker_users": fit["groups"],
        "candidate_recall": candidate_recall(pipeline, users, relevant),
        "models": {name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in lists.items()},
    }


def train(config: TrainConfig, echo: bool = True) -> RunResult:
    """Run everything; save to the stores only once all of it has worked."""
    # First: a cluster that cannot be reached is said before any work.
    with connect(config.engine, config.engine_timeout) as engine:
        return _train(config, echo, engine)


def _train(config: TrainConfig, echo: bool, engine: DaskEngine | None) -> RunResult:
    steps = Steps(echo)
    np.random.seed(config.seed)
    with steps.step("load data"):
        dataset = load_data(config)
        for note in dataset.notes:
            print(f"  note: {note}")
        if echo:
            inter = dataset.interactions
            print(
                f"  {len(inter):,} interactions, {inter['user_id'].nunique():,} users, "
                f"{inter['item_id'].nunique():,} items ({config.dataset_name})"
            )
    # What reading the files freed stays with the process otherwise, much of it in Arrow's pool (mimalloc), which
    # numpy's arrays never reuse: at 20M interactions the resident set after loading went 1,899 -> 974 MB.
    give_back_memory()
    # A backtest fold holds the stage it scores while building its training cuts' one at a time: two. With none,
    # the final rankers need each cut's stage only while its rows are built, so one (a stage fewer alive while
    # the next is built; not measured on its own).
    held = 2 if config.backtest_cuts else 1
    stages = Stages(dataset, config.candidate_params(), echo=echo, engine=engine, held=held)
    results: dict[str, Any] = {"dataset": config.dataset_name, "k": K}
    with steps.step("final ranker: trained on the latest cuts"):
        # First: if the data cannot train a ranker, say so before spending time on the evaluation.
        until = int(dataset.interactions[Columns.timestamp].max()) + 1
        rankers, stats = fit_rankers(
            stages, until, config.ranker_params(), serve_at=None, rows_needed_later=bool(config.backtest_cuts)
        )
    cold_start = (CandidateParams.cold_start_days, CandidateParams.segment_weight)
    if config.backtest_cuts:
        with steps.step(f"backtest: weekly cuts over the second half (at most {config.backtest_cuts})"):
            results["backtest"] = _or_skipped(
                lambda: run_backtest(stages, config.ranker_params(), config.backtest_params(), echo)
            )
            if "cold_start" in results["backtest"]:
                cold_start = (
                    results["backtest"]["cold_start"]["days"],
                    results["backtest"]["cold_start"]["segment_weight"],
                )
        compare_with_baselines(config, results)
    # Only the stage of all the data is used from here on: the training cuts' stages and rows go before the
    # per-user split builds two stages of its own (at 20M interactions they were the run's peak, 13.9 GB).
    stages.forget_before(until)
    give_back_memory()
    with steps.step("secondary evaluation: per-user split"):
        results["per_user_split"] = _or_skipped(lambda: per_user_split(config, dataset))
    results["ranker_training"] = stats
    candidates = stages.at(None).candidates.with_cold_start(dataset.interactions, *cold_start)
    data_fingerprint = fingerprint(dataset)
    if echo:
        print()
        print(markdown_table(results))
    result = RunResult(results, steps.timings, steps.peak_mb)
    with steps.step("report"):
        paths = write_report(results, Path(config.report_dir))
        if echo:
            print(f"  wrote {', '.join(str(p) for p in paths.values())}")
    if config.save:
        with steps.step("save models and feature store"):
            save(config, candidates, rankers, stages.at(None).tables, data_fingerprint, results, result)
            if echo:
                print(f"  saved {result.candidates_tag}, {result.ranker_tag}; feature store {config.feature_store}")
    if echo:
        print(f"total: {sum(steps.timings.values()):.1f}s")
    return result


class Provenance(TypedDict):
    """What both model cards say of the data and the time they were trained."""

    data_fingerprint: str
    dataset: str
    trained_at: str


def save(
    config: TrainConfig,
    final: CandidateModel,
    rankers: Rankers,
    tables: FeatureTables,
    data_fingerprint: str,
    results: dict[str, Any],
    result: RunResult,
) -> None:
    """Model store first (candidates, then the ranker naming it), feature store last.

    If the ranker cannot be saved the new candidates model is deleted again,
    so the store never holds a pair that does not match.
    """
    import bentoml

    created_at = datetime.now(UTC).isoformat()
    common: Provenance = {
        "data_fingerprint": data_fingerprint,
        "dataset": config.dataset_name,
        "trained_at": created_at,
    }
    card = CandidatesCard(**common, **final.counts(), params=final.params)
    with bentoml.models.create(CANDIDATES_MODEL, metadata=card.to_metadata(), labels={"stage": "candidates"}) as model:
        final.save(Path(model.path))
        version = write_snapshot(
            tables, str(Path(model.path) / MODEL_SNAPSHOT_DIR), data_fingerprint, created_at=created_at
        )
    result.candidates_tag = str(model.tag)
    try:
        ranker_card = RankerCard(
            **common,
            candidates_tag=result.candidates_tag,
            feature_version=version,
            features=rankers.main.names,
            prior=rankers.main.prior,
            visitor_prior=rankers.visitors.prior if rankers.visitors is not None else None,
            visitor_ranker=rankers.visitors is not None,
            recent_prior=rankers.recent.prior if rankers.recent is not None else None,
            recent_ranker=rankers.recent is not None,
            n_candidates=config.n_candidates,
            evaluation=model_card_evaluation(results),
            timings=result.timings,
            kernels=kernels_in_use(),
        )
        with bentoml.models.create(
            RANKER_MODEL, labels={"stage": "ranker"}, metadata=ranker_card.to_metadata()
        ) as saved:
            save_rankers(Path(saved.path), rankers)
    except BaseException:
        bentoml.models.delete(result.candidates_tag)
        raise
    result.ranker_tag = str(saved.tag)
    result.feature_version = write_snapshot(
        tables, config.feature_store, data_fingerprint, version=version, created_at=created_at
    )


def save_rankers(directory: Path, rankers: Rankers) -> None:
    """Every ranker into the ranker's model folder (serving/runtime.py reads them back)."""
    rankers.main.save(directory / RANKER_FILE)
    for ranker, file in ((rankers.visitors, VISITOR_RANKER_FILE), (rankers.recent, RECENT_RANKER_FILE)):
        if ranker is not None:
            ranker.save(directory / file)


def compare_with_baselines(config: TrainConfig, results: dict[str, Any]) -> None:
    """Say loudly when a baseline beat the two-stage model in the backtest (an error when so configured).

    The warning is kept in the results, so the model card and ``/model_info`` carry it too.
    """
    horizon = f"{config.horizon_days} days"
    beaten = beaten_by(results.get("backtest", {}), horizon)
    if beaten is None:
        return
    name, best, ours = beaten
    message = (
        f"the two-stage model (NDCG@{K} {ours:.4f}) is worse than {name} ({best:.4f}) "
        f"in the backtest (warm users, {horizon})"
    )
    if config.fail_if_worse_than_baseline:
        raise WorseThanBaseline(f"{message}: nothing saved (--fail-if-worse-than-baseline)")
    results["warning"] = message
    print(
        f"\nWARNING: {message}. The model is saved anyway; serving the baseline may be better "
        "(--fail-if-worse-than-baseline makes this an error).\n",
        file=sys.stderr,
        flush=True,
    )


def _or_skipped(evaluate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An evaluation's results, or why it could not run on this data (printed as a note)."""
    try:
        return evaluate()
    except NotEnoughHistory as exc:
        print(f"  note: skipped: {exc}")
        return {"skipped": str(exc)}


def model_card_evaluation(results: dict[str, Any]) -> dict[str, Any]:
    """What the model card keeps of the evaluation: every metric, not the per-option or per-user detail."""
    card = {k: v for k, v in results.items() if k != "ranker_training"}
    if "rows" in card.get("backtest", {}):
        rows = [{k: v for k, v in row.items() if k not in ROW_DETAIL} for row in card["backtest"]["rows"]]
        card["backtest"] = {**card["backtest"], "rows": rows}
    return card


# Per-option and per-user results of a backtest row: the report keeps them, the model card does not.
ROW_DETAIL = ("cold_start_options", "cold_start_per_user", "per_user")
