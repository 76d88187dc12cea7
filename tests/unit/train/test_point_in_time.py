"""Point-in-time correctness of everything fitted for a cut T: candidate sources, features, training rows and
labels, the ranker and its prior, the backtest's fold and its cold-start choice.

Each test builds the same artefact twice through the code the backtest uses
(``Stages.at``, ``Stages.training_rows``, ``fit_ranker``, ``fitted_folds``):
once from the data cut at T (nothing after T exists) and once from all of it
plus a burst of interactions from T on over every item (see
tests/unit/features/test_point_in_time.py). Any read of the future makes the
two differ.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest

from features.schema import Columns, Dataset
from features.synthetic import SyntheticConfig, generate
from stages.candidates import CandidateParams, popularity_share
from stages.pipeline import Query, TwoStageRecommender
from tests.support import cut_at, with_future
from train.backtest import (
    BacktestParams,
    backtest_cuts,
    choose_cold_start,
    cut_label,
    cut_shares,
    fitted_folds,
    option_name,
    rows_known_at,
)
from train.ranker_training import DAY, RankerParams, Stages, fit_ranker

CANDIDATES = CandidateParams(factors=8, iterations=5, seed=3, n_popular=20, n_cooc=15)
RANKER = RankerParams(iterations=20, n_candidates=30, train_cuts=2, label_days=14, threads=1)


@pytest.fixture(scope="module")
def base() -> Dataset:
    return generate(SyntheticConfig(n_users=150, n_items=80, n_interactions=6_000, n_clusters=3, seed=11))


@pytest.fixture(scope="module")
def cut(base) -> int:
    return int(base.interactions[Columns.timestamp].quantile(0.75))


@pytest.fixture(scope="module")
def history(base, cut) -> Dataset:
    """The synthetic data plus visitors: users first seen in the last training cut's label window, 8 items each."""
    start = cut - RANKER.label_days * DAY
    rng = np.random.default_rng(7)
    items = base.interactions[Columns.item].unique()
    visitors = pd.DataFrame(
        {
            Columns.user: np.repeat([f"visitor{i}" for i in range(12)], 8),
            Columns.item: rng.choice(items, 96),
            Columns.timestamp: start + DAY + rng.integers(0, 10 * DAY, 96),
            Columns.weight: np.float32(4.0),
        }
    )
    inter = pd.concat([base.interactions, visitors], ignore_index=True).drop_duplicates([Columns.user, Columns.item])
    return Dataset(inter.reset_index(drop=True), base.users, base.items)


@pytest.fixture(scope="module")
def both(history, cut) -> tuple[Stages, Stages]:
    """Stages over the data as it was at the cut, and over all of it plus a future burst."""
    return Stages(cut_at(history, cut), CANDIDATES), Stages(with_future(history, cut), CANDIDATES)


def test_every_candidate_source_fitted_at_t_ignores_the_future(both, cut):
    before, after = (stages.at(cut).candidates for stages in both)
    for name in ("user_ids", "item_ids", "popular", "cold_share", "latest"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name), err_msg=name)
    np.testing.assert_array_equal(before.als.user_factors, after.als.user_factors)
    np.testing.assert_array_equal(before.als.item_factors, after.als.item_factors)
    assert (before.seen != after.seen).nnz == 0
    np.testing.assert_array_equal(before.cooc.items, after.cooc.items)
    np.testing.assert_array_equal(before.cooc.weights, after.cooc.weights)


def test_the_candidate_model_fitted_as_of_t_on_all_the_data_is_the_one_fitted_on_the_past(history, cut):
    from stages.candidates import CandidateModel

    before = CandidateModel.fit(cut_at(history, cut).interactions, CANDIDATES, as_of=cut)
    after = CandidateModel.fit(with_future(history, cut).interactions, CANDIDATES, as_of=cut)
    np.testing.assert_array_equal(before.als.item_factors, after.als.item_factors)
    np.testing.assert_array_equal(before.popular, after.popular)
    np.testing.assert_array_equal(before.cold_share, after.cold_share)
    np.testing.assert_array_equal(before.cooc.items, after.cooc.items)


def test_the_popularity_lists_a_cut_is_scored_against_ignore_the_future(both, cut):
    """The baselines and every cold-start option the backtest weighs at a cut read only what came before it."""
    item_ids = both[0].at(cut).candidates.item_ids
    before, after = (cut_shares(stages.dataset.interactions, item_ids, cut) for stages in both)
    assert before.keys() == after.keys()
    for days in before:
        np.testing.assert_array_equal(before[days], after[days], err_msg=f"{days} days")


@pytest.mark.parametrize("damping", [0.0, 0.5, 1.0])
def test_popularity_shares_at_t_damped_by_each_users_takes_ignore_the_future(both, cut, damping):
    """A user's takes that damp their weight are counted inside the window too, never up to the data's end."""
    item_ids = both[0].at(cut).candidates.item_ids
    for days in (1, 7, 30, None):
        before, after = (
            popularity_share(stages.dataset.interactions, item_ids, cut, days, user_damping=damping) for stages in both
        )
        np.testing.assert_array_equal(before, after, err_msg=f"{days} days")


def test_feature_rows_at_t_ignore_the_future(both, cut):
    rows = []
    for stages in both:
        stage = stages.at(cut)
        users = np.arange(len(stage.candidates.user_ids))
        batch = stage.candidates.top_n(users, 30)
        pipeline = TwoStageRecommender(stage.candidates, None, stage.view, 30)
        rows.append((batch.items, pipeline.pair_rows(users, batch, stage.view.available())))
    (items_a, (numeric_a, categorical_a)), (items_b, (numeric_b, categorical_b)) = rows
    assert all(np.array_equal(a, b) for a, b in zip(items_a, items_b, strict=True))
    np.testing.assert_array_equal(numeric_a, numeric_b)
    np.testing.assert_array_equal(categorical_a, categorical_b)


def test_training_rows_and_labels_for_a_ranker_at_t_end_before_t(both, cut):
    """Labels of every training cut stop at T: the ranker, its prior and its rows are the same either way."""
    fitted = [fit_ranker(stages, cut, RANKER, serve_at=cut, show_progress=False) for stages in both]
    (ranker_a, stats_a), (ranker_b, stats_b) = fitted
    assert stats_a["rows"] > 0 and stats_a["positives"] > 0
    for key in ("cuts", "rows", "groups", "positives", "prior"):
        assert stats_a[key] == stats_b[key], key
    stage = both[0].at(cut)
    users = np.arange(len(stage.candidates.user_ids))
    batch = stage.candidates.top_n(users, 30)
    numeric, categorical = TwoStageRecommender(stage.candidates, None, stage.view, 30).pair_rows(
        users, batch, ranker_a.names
    )
    np.testing.assert_array_equal(ranker_a.score(numeric, categorical), ranker_b.score(numeric, categorical))


def test_every_training_block_reads_only_its_own_label_window(history, cut):
    """A training cut's rows (known users', visitors' and known users' requests with recent items) are the same
    whatever comes after its label window: the cache is keyed by cut, so a block must never depend on the data's
    end."""
    train_cut = cut - RANKER.label_days * DAY
    window_end = train_cut + RANKER.label_days * DAY
    a, b = Stages(cut_at(history, window_end), CANDIDATES), Stages(with_future(history, window_end), CANDIDATES)
    names = a.at(train_cut).view.available()
    kinds = {
        "known users": Stages.training_rows,
        "visitors' requests": partial(Stages.request_rows, known=False),
        "known users' requests": partial(Stages.request_rows, known=True),
    }
    for kind, rows in kinds.items():
        block_a, block_b = rows(a, train_cut, names, RANKER), rows(b, train_cut, names, RANKER)
        assert block_a is not None and len(block_a.labels) > 0, kind
        np.testing.assert_array_equal(block_a.numeric, block_b.numeric)
        np.testing.assert_array_equal(block_a.labels, block_b.labels)
        np.testing.assert_array_equal(block_a.queries, block_b.queries)


def test_a_backtest_fold_answers_the_same_whatever_comes_after_its_cut(history):
    """The fold at each cut answers the same before and after the future is appended: nothing at that cut
    read it. Every cut of the backtest is checked with the future appended from that cut on."""
    params = BacktestParams(n_cuts=3, horizon_days=14)
    cuts = backtest_cuts(history.interactions, params)
    fold = replace(RANKER, iterations=10)
    for cut in cuts:
        answers = []
        for data in (cut_at(history, cut), with_future(history, cut)):
            [(_, stage, pipeline)] = list(fitted_folds(Stages(data, CANDIDATES), [cut], fold))
            users = [str(u) for u in stage.candidates.user_ids[:40]] + ["newcomer1", "nobody"]
            answers.append([(a.item_ids, a.scores, a.strategy) for a in pipeline.recommend([Query(u) for u in users])])
        assert answers[0] == answers[1], f"the fold at {cut} read data after it"


def test_the_cold_start_served_at_a_cut_is_chosen_on_cuts_whose_horizon_ended_before_it():
    """Weekly cuts and a two-week horizon: the previous cut's scores read past this cut and must not count."""
    cuts = [0, 7 * DAY, 14 * DAY]

    def cold(cut: int, best: tuple) -> dict:
        options = {option_name(d, w): {"ndcg@10": 0.0} for d in (None, 1, 7, 30, 60) for w in (0.0, 0.3, 1.0, 3.0)}
        options[option_name(*best)] = {"ndcg@10": 1.0}
        return {"cut": cut_label(cut), "segment": "cold", "horizon": "14 days", "cold_start_options": options}

    rows = [cold(0, (7, 0.0)), cold(7 * DAY, (None, 1.0)), cold(14 * DAY, (1, 3.0))]
    known = rows_known_at(rows, cuts, 14 * DAY, 14)
    assert known == rows[:1]  # the cut a week before ends a week after: not known at 14 days
    assert choose_cold_start(known, "14 days") == (7, 0.0)
    assert rows_known_at(rows, cuts, 0, 14) == []
