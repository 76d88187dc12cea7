"""Known answers for the requests with recent items that the rankers learn from; what the stages keep in memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.schema import DAY, Columns
from stages.candidates import CandidateParams
from train.backtest import BacktestParams, _folds_here, fitted_folds
from train.ranker_training import (
    ROW_KINDS,
    RankerParams,
    Stages,
    _labelled_rows,
    common_names,
    fit_rankers,
    fresh_items,
    request_examples,
)

CUT = 1_000 * DAY
PARAMS = RankerParams(label_days=7, recent_items_passed=2)


def interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, times = zip(*rows, strict=True)
    return pd.DataFrame(
        {Columns.user: users, Columns.item: items, Columns.timestamp: times, Columns.weight: [1.0] * len(rows)}
    )


DATA = interactions(
    [
        ("old", "a", CUT - DAY),  # known at the cut: took a before it
        ("old", "b", CUT + 1),
        ("old", "c", CUT + 2),
        ("old", "a", CUT + 3),  # taken again: not new, not a label
        ("old", "d", CUT + 4),
        ("old", "e", CUT + 8 * DAY),  # after the label window
        ("new", "b", CUT + 1),  # a visitor: nothing before the cut
        ("new", "c", CUT + 2),
        ("new", "d", CUT + 3),
        ("few", "x", CUT - DAY),  # known, but only the two recent items in the window: nothing left to learn
        ("few", "b", CUT + 1),
        ("few", "c", CUT + 2),
    ]
)


def test_visitors_pass_their_first_items_and_learn_the_rest():
    [(query, label)] = request_examples(DATA, CUT, PARAMS, known=False)
    assert query.user_id == "new" and [e.item_id for e in query.recent_items] == ["b", "c"]
    assert label == {"d"}


def test_known_users_learn_only_what_is_new_to_them_inside_the_window():
    [(query, label)] = request_examples(DATA, CUT, PARAMS, known=True)
    assert query.user_id == "old" and [e.item_id for e in query.recent_items] == ["b", "c"]
    assert [e.timestamp for e in query.recent_items] == [CUT + 1, CUT + 2]
    assert label == {"d"}  # not a (taken before the cut), not e (after the window)


def test_at_most_users_per_cut_users_make_requests_the_same_ones_every_time():
    # Every user active in the week made a request: on 20M interactions, rows for ~10^5 users a cut.
    data = pd.concat([DATA, interactions([("new2", "b", CUT + 1), ("new2", "c", CUT + 2), ("new2", "e", CUT + 3)])])
    assert sorted(q.user_id for q, _ in request_examples(data, CUT, PARAMS, known=False)) == ["new", "new2"]
    one = replace(PARAMS, max_users=1, train_cuts=1)
    [(query, _)] = request_examples(data, CUT, one, known=False)
    assert query.user_id in {"new", "new2"}
    assert request_examples(data, CUT, one, known=False) == request_examples(data, CUT, one, known=False)


def test_forgetting_a_time_drops_its_training_rows_unless_a_study_keeps_them(small_dataset):
    # The backtest lets go of what no later fold trains on (kept, every cut's rows grew with the number of cuts).
    # Studies that rerun backtests over the same cuts keep them.
    params = RankerParams(n_candidates=20)
    end = int(small_dataset.interactions[Columns.timestamp].max())
    old, recent = end - 21 * DAY, end - 14 * DAY
    for keep in (False, True):
        stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2), keep_rows=keep)
        names = common_names([stages.names(old), stages.names(recent)])
        before = {cut: stages.training_rows(cut, names, params) for cut in (old, recent)}
        stages.forget_before(recent)
        assert stages.training_rows(recent, names, params) is before[recent]
        assert (stages.training_rows(old, names, params) is before[old]) == keep


QUICK = RankerParams(n_candidates=20, iterations=5, train_cuts=3, max_users=300)


def counting_builds(stages: Stages) -> list[tuple[int | None, int]]:
    """Record every stage the ``stages`` build: its time and how many dated stages were held as it was built."""
    builds: list[tuple[int | None, int]] = []
    build = stages._build

    def counted(as_of: int | None):
        builds.append((as_of, sum(t is not None for t in stages.held_stages())))
        return build(as_of)

    stages._build = counted  # type: ignore[method-assign]
    return builds


@pytest.mark.parametrize("held", [2, 1])  # two with a backtest after them, one without (train.run)
def test_the_three_final_rankers_build_each_stage_once_holding_no_more_than_asked(small_dataset, held):
    # Held all at once, the final rankers' nine stages were most of a 20M-interaction training's memory.
    stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2), held=held)
    builds = counting_builds(stages)
    until = int(small_dataset.interactions[Columns.timestamp].max()) + 1
    rankers, _ = fit_rankers(stages, until, QUICK, serve_at=None, show_progress=False)
    assert rankers.recent is not None  # the synthetic data has no visitors late on, known users' requests
    built = [t for t, _ in builds]
    assert len(built) == len(set(built)) == QUICK.train_cuts + 1  # the training cuts and all the data
    # A dated stage is built with at most held - 1 others alive: the ones let go go before the build, its peak.
    assert max(n for t, n in builds if t is not None) == held - 1
    assert [n for t, n in builds if t is None] == [held]  # rows needed later (a backtest): its stages may be too
    assert sum(t is not None for t in stages.held_stages()) <= held


def test_final_rankers_that_no_backtest_follows_let_go_of_their_rows_and_are_the_same(small_dataset):
    """Without a backtest after them the fits free the rows only they read (memory at 20M interactions)."""
    until = int(small_dataset.interactions[Columns.timestamp].max()) + 1
    fitted, cached = {}, {}
    for later in (True, False):
        stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2))
        rankers, _ = fit_rankers(stages, until, QUICK, serve_at=None, show_progress=False, rows_needed_later=later)
        fitted[later], cached[later] = rankers, {key[0] for key in stages._rows}
        if later:
            rows = next(r for r in stages._rows.values() if r is not None)
    assert cached[True] == set(ROW_KINDS)
    assert cached[False] == set()  # each kind read for the last time by the request rankers
    for kept, freed in [(fitted[True].main, fitted[False].main), (fitted[True].recent, fitted[False].recent)]:
        assert kept is not None and freed is not None
        assert np.array_equal(kept.score(rows.numeric, rows.categorical), freed.score(rows.numeric, rows.categorical))


def test_the_backtest_folds_build_each_stage_once(small_dataset):
    stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2))
    builds = counting_builds(stages)
    end = int(small_dataset.interactions[Columns.timestamp].max())
    cuts = [end - 21 * DAY, end - 14 * DAY, end - 7 * DAY]
    assert [cut for cut, _, _ in fitted_folds(stages, cuts, QUICK)] == cuts
    built = [t for t, _ in builds]
    assert len(built) == len(set(built)) == QUICK.train_cuts + len(cuts)  # weekly: each fold adds one stage
    assert max(n for _, n in builds) == 1  # the stage scored last, which the next fold trains on, and the new one


def alive_at_builds(stages: Stages) -> list[int]:
    """At each dated stage's build: how many dated stages are still alive anywhere (weakrefs, after a collection)."""
    import gc
    import weakref

    born: list[weakref.ref] = []
    alive: list[int] = []
    build = stages._build

    def watched(as_of: int | None):
        if as_of is not None:
            gc.collect()
            alive.append(sum(r() is not None for r in born))
        stage = build(as_of)
        if as_of is not None:
            born.append(weakref.ref(stage))
        return stage

    stages._build = watched  # type: ignore[method-assign]
    return alive


def test_backtest_folds_two_weeks_apart_let_go_of_a_fold_s_stage_before_the_next_fold_builds(small_dataset):
    """Folds further apart than the training cuts share no stage: the scored one must not live on in a loop's names
    through the next fold's builds (on long histories the backtest's 16 folds are more than a week apart)."""
    stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2))  # held 2, as with a backtest
    alive = alive_at_builds(stages)
    end = int(small_dataset.interactions[Columns.timestamp].max())
    cuts = [end - 42 * DAY, end - 28 * DAY, end - 14 * DAY]
    assert len(list(_folds_here(stages, cuts, QUICK, BacktestParams(horizon_days=7)))) == len(cuts)
    assert len(alive) >= 2 * len(cuts) and max(alive) == 1, alive  # the new stage and the one the cache holds


def test_rows_cut_to_fewer_columns_equal_rows_built_with_those_columns(small_dataset):
    # Rows are built once with every column a stage has; a ranker that uses fewer gets those columns of them.
    stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2))
    cut = int(small_dataset.interactions[Columns.timestamp].max()) - 14 * DAY
    every = stages.names(cut)
    fewer = replace(every, numeric=every.numeric[::-2], categorical=every.categorical[:1])
    rows = stages.training_rows(cut, fewer, QUICK)
    taken = fresh_items(small_dataset.interactions, cut, cut + QUICK.label_days * DAY)
    direct = _labelled_rows(stages.at(cut), taken, QUICK, fewer)
    assert rows is not None and direct is not None and rows.numeric.shape[1] == len(fewer.numeric)
    pd.testing.assert_frame_equal(pd.DataFrame(rows.numeric), pd.DataFrame(direct.numeric))
    assert (rows.categorical == direct.categorical).all() and (rows.labels == direct.labels).all()


def test_final_rankers_fit_with_nothing_but_their_list_holding_the_rows_that_no_backtest_reads(
    small_dataset, monkeypatch
):
    """Without a backtest, each fit's row blocks are let go once gathered: at 20M-100M interactions a block kept
    alive through a fit is memory at the peak (a name bound in a comprehension had kept the last one)."""
    import weakref

    from train import ranker_training

    fit = ranker_training.fit_on_blocks
    alive_in_fits: list[int] = []
    blocks_in_fits: list[int] = []

    def watched(blocks, *args, **kwargs):
        refs = [weakref.ref(b) for b in blocks]
        blocks_in_fits.append(len(refs))
        try:
            return fit(blocks, *args, **kwargs)
        finally:
            alive_in_fits.append(sum(r() is not None for r in refs))  # fit_on_blocks has emptied the list

    monkeypatch.setattr(ranker_training, "fit_on_blocks", watched)
    until = int(small_dataset.interactions[Columns.timestamp].max()) + 1
    stages = Stages(small_dataset, CandidateParams(factors=8, iterations=2), held=1)
    builds = counting_builds(stages)
    fit_rankers(stages, until, QUICK, serve_at=None, show_progress=False, rows_needed_later=False)
    assert [n for t, n in builds if t is None] == [0]  # the stage of all the data built with no dated one held
    # The main ranker's rows stay cached for the recent-items ranker, which reads them again; the request rankers'
    # fits are the last to read theirs.
    assert len(alive_in_fits) == 3 and alive_in_fits[1:] == [0, 0]
    assert blocks_in_fits[2] > 1  # the recent-items ranker's fit had blocks to let go (visitors' may have none)
