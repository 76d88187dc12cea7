"""One training run: data -> features -> models -> evaluation -> stores."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from features import movielens
from features.compute import FeatureTables, compute_features
from features.schema import Dataset, load_dataset
from features.store import MODEL_SNAPSHOT_DIR, fingerprint, write_snapshot
from stages.candidates import CandidateModel
from stages.card import CANDIDATES_MODEL, RANKER_MODEL, CandidatesCard, RankerCard
from stages.feature_view import FeatureView
from stages.pipeline import Query, TwoStageRecommender
from stages.ranker import Ranker
from train.config import TrainConfig
from train.evaluate import (
    K,
    candidate_recall,
    markdown_table,
    popularity_lists,
    ranking_metrics,
    relevant_items,
    temporal_split,
    write_report,
)
from train.ranker_training import build_stage, fit_ranker, fit_ranker_on_stage, sample_users


@dataclass
class RunResult:
    """What a run produced (tags are empty when nothing was saved)."""

    evaluation: dict
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
    if config.interactions:
        return load_dataset(config.interactions, config.users, config.items)
    return movielens.load()


def evaluate(
    config: TrainConfig, dataset: Dataset, steps: Steps
) -> tuple[dict, tuple[CandidateModel, FeatureView], tuple]:
    """Held-out comparison of popularity, ALS and the two-stage model."""
    train_part, test_part = temporal_split(dataset.interactions, config.holdout)
    with steps.step("evaluation: ALS + features on the training window"):
        stage = build_stage(Dataset(train_part, dataset.users, dataset.items), config.als_params(), config.recent_days)
    with steps.step("evaluation: ranker on the window before"):
        ranker, stats = fit_ranker(
            Dataset(train_part, dataset.users, dataset.items),
            config.als_params(),
            config.ranker_params(),
            config.recent_days,
        )
    with steps.step("evaluation: scoring held-out users"):
        candidates, view = stage
        relevant = relevant_items(train_part, test_part, candidates)
        users = sample_users(np.array(sorted(relevant), dtype=np.int64), config.max_eval_users, config.seed).tolist()
        relevant = {u: relevant[u] for u in users}
        recent_from = int(train_part["timestamp"].max()) - config.recent_days * 86_400
        als_only = TwoStageRecommender(candidates, None, view, config.n_candidates)
        two_stage = TwoStageRecommender(candidates, ranker, view, config.n_candidates)
        queries = [Query(str(candidates.user_ids[u]), k=K) for u in users]
        lists = {
            "popular (all time)": popularity_lists(train_part, candidates, users),
            f"popular (last {config.recent_days} days)": popularity_lists(
                train_part, candidates, users, since=recent_from
            ),
            "ALS": {u: r.item_ids for u, r in zip(users, als_only.recommend(queries), strict=True)},
            "two-stage (ALS + CatBoost)": {
                u: r.item_ids for u, r in zip(users, two_stage.recommend(queries), strict=True)
            },
        }
        models = {name: ranking_metrics(recs, relevant, candidates.n_items) for name, recs in lists.items()}
        results = {
            "dataset": config.dataset_name,
            "split": f"each user's last {config.holdout:.0%} of interactions by time held out",
            "k": K,
            "users": len(users),
            "n_candidates": config.n_candidates,
            "candidate_recall": candidate_recall(candidates, relevant, config.n_candidates),
            "models": models,
            "ranker_training": stats,
        }
    return results, stage, (train_part, test_part)


def train(config: TrainConfig, echo: bool = True) -> RunResult:
    """Run everything; save to the stores only once all of it has worked."""
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
    results, stage, (train_part, test_part) = evaluate(config, dataset, steps)
    with steps.step("final ranker: trained on the latest window"):
        candidates, view = stage
        ranker, stats = fit_ranker_on_stage(candidates, view, train_part, test_part, config.ranker_params())
        results["final_ranker_training"] = stats
    with steps.step("final candidates + features: all data"):
        final = CandidateModel.fit(dataset.interactions, config.als_params())
        tables = compute_features(dataset, config.recent_days)
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
            save(config, final, ranker, tables, data_fingerprint, results, result)
            if echo:
                print(f"  saved {result.candidates_tag}, {result.ranker_tag}; feature store {config.feature_store}")
    if echo:
        print(f"total: {sum(steps.timings.values()):.1f}s")
    return result


def save(
    config: TrainConfig,
    final: CandidateModel,
    ranker: Ranker,
    tables: FeatureTables,
    data_fingerprint: str,
    results: dict,
    result: RunResult,
) -> None:
    """Model store first (candidates, then the ranker naming it), feature store last.

    If the ranker cannot be saved the new candidates model is deleted again,
    so the store never holds a pair that does not match.
    """
    import bentoml

    created_at = datetime.now(UTC).isoformat()
    common = {"data_fingerprint": data_fingerprint, "dataset": config.dataset_name, "trained_at": created_at}
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
            features=ranker.names,
            n_candidates=config.n_candidates,
            evaluation={k: v for k, v in results.items() if "ranker_training" not in k},
            timings=result.timings,
        )
        saved = bentoml.catboost.save_model(
            RANKER_MODEL, ranker.model, labels={"stage": "ranker"}, metadata=ranker_card.to_metadata()
        )
    except BaseException:
        bentoml.models.delete(result.candidates_tag)
        raise
    result.ranker_tag = str(saved.tag)
    result.feature_version = write_snapshot(
        tables, config.feature_store, data_fingerprint, version=version, created_at=created_at
    )
