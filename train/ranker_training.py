"""Training the re-ranker the way it is used: as of global cuts, labelled by what came next.

At each training cut T the candidate model and every feature are computed
from interactions before T only (a :class:`Stage`); the labels are the items
each user took in ``[T, T + label_days)`` that they had not taken before T.
Several cuts are stacked for more examples. Serving then asks the same
question: everything up to now is known, what comes next?
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias

import numpy as np
import pandas as pd
from catboost import CatBoost, Pool
from tqdm import tqdm

from features.compute import FeatureTables, compute_features
from features.schema import DAY, Columns, Dataset, is_in
from stages.candidates import CandidateBatch, CandidateModel, CandidateParams
from stages.feature_view import FeatureNames, FeatureView
from stages.memory import give_back_memory
from stages.pipeline import Query, RecentEvent, TwoStageRecommender
from stages.ranker import Prior, Ranker

LOSSES = ("YetiRank", "PairLogit", "Logloss")

# The kinds of training rows a cut gives: the main ranker's (users known at the cut, labelled by what they took
# next), and requests with recent items from visitors and from known users (the other two rankers').
KNOWN, VISITORS, KNOWN_REQUESTS = "known", "visitors", "known users' requests"
ROW_KINDS = (KNOWN, VISITORS, KNOWN_REQUESTS)
# A cached block's key (:func:`_row_key`): the kind, the cut second, the settings the rows depend on (the request
# rows' one more).
RowKey: TypeAlias = tuple[str, int, int, int, int, int] | tuple[str, int, int, int, int, int, int]


class NotEnoughHistory(ValueError):
    """The data is too short or too sparse in time for a step: the message says what to change."""


@dataclass(frozen=True)
class RankerParams:
    """CatBoost settings and how its training examples are cut (recorded in the model card)."""

    loss: str = "Logloss"
    iterations: int = 150  # the backtest folds use the same by default, so the backtest measures what is served
    depth: int = 6
    learning_rate: float = 0.05
    n_candidates: int = 100
    seed: int = 42
    threads: int = 2
    # Users sampled per ranker fit, split evenly over its training cuts (users_per_cut), for its rows and for each
    # kind of request rows: bounds a pool at about this many users' candidates (~200 each) on big data, as when
    # one cut of 20,000 users was trained (the recent-items ranker's, main rows and its requests', at twice
    # that). MovieLens-100K has a few hundred users a cut; none is left out.
    max_users: int = 20_000
    # What a user takes in this many days after a cut is what the ranker learns to find. A week, not the two the
    # backtest scores: the latest training cut then sits a week before serving time, not two, and eight cuts keep
    # the examples. Chosen from past cuts alone (`train.studies nested`), it beat 14 days and four cuts on all three
    # periods checked, at two seeds and with either kernels (docs/quality.md).
    label_days: int = 7
    train_cuts: int = 8  # cuts stacked for training, the latest at T - label_days ...
    cut_step_days: float = 7.0  # ... and each earlier one this many days before the next
    # The rankers for requests with recent_items (visitors', and known users'): a user passes their first this many
    # interactions after a cut as recent_items and is labelled by the new items they took later (0: neither ranker;
    # train.freshness evaluates such requests the same way, with its own n_recent). Those rows
    # have rankers of their own: mixed into the main ranker's rows, visitors' cost known users' answers a tenth of
    # their NDCG@10 in the rolling backtest, known users' requests a tenth too (docs/quality.md).
    recent_items_passed: int = 3
    exclude_features: tuple[str, ...] = ()  # columns left out of the ranker (the ablation study's knob)
    # Boost from a prior on popularity and the ALS score fitted on the same rows (stages/ranker.py): the trees
    # learn what improves on both instead of relearning them at every fit.
    prior: bool = True

    @property
    def users_per_cut(self) -> int:
        return max(1, self.max_users // self.train_cuts)


@dataclass
class Stage:
    """The candidate model and the feature view as of one time, built from the interactions before it."""

    candidates: CandidateModel
    view: FeatureView
    tables: FeatureTables


@dataclass(frozen=True)
class RowBlock:
    """Ranker training rows from one stage: features, labels, a query id per row (unique within the block)."""

    numeric: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray
    queries: np.ndarray


class Stages:
    """Stages built once per time, and the training rows built from each: the backtest's folds and the final
    model share both (a fold at T reuses the rows of every training cut before T)."""

    # A stage that takes this long to build is said when done: on 20M interactions each takes a minute or two,
    # and the final ranker's step builds nine before it prints anything else.
    SLOW_STAGE_SECONDS = 10.0

    def __init__(
        self,
        dataset: Dataset,
        params: CandidateParams,
        keep_rows: bool = False,
        echo: bool = False,
        held: int | None = 2,
        engine: RowEngine | None = None,
    ) -> None:
        """``keep_rows``: keep every cut's training rows, for studies that run backtests over the same cuts again.
        ``echo``: print a line for each stage that was slow to build, and show progress over training cuts.
        ``engine``: where :meth:`prepare_rows` builds training cuts' rows (``None``: here, one at a time).
        ``held``: how many dated stages stay built at once, the least recently used let go first (``None``: all).
        A cut's rows and column names outlive its stage, so a backtest fold needs only the stage it is scored
        on and, while their rows are built, its training cuts' one at a time. Held, the final rankers' nine
        stages were most of the memory of a 20M-interaction training."""
        if held is not None and held < 1:
            raise ValueError(f"held must be at least 1 (the stage just asked for), got {held}")
        self.dataset = dataset
        self.params = params
        self.keep_rows = keep_rows
        self.echo = echo
        self.held = held
        self.engine = engine
        self._built: dict[int | None, Stage] = {}  # least recently used first
        self._names: dict[int | None, FeatureNames] = {}
        self._rows: dict[RowKey, RowBlock | None] = {}

    def at(self, as_of: int | None) -> Stage:
        """The stage as of ``as_of`` (``None``: all the data, for serving; never let go)."""
        stage = self._built.pop(as_of, None)
        if stage is None:
            if as_of is not None:
                self._make_room()
            stage = self._build(as_of)
        self._built[as_of] = stage
        self._names.setdefault(as_of, stage.view.available())
        return stage

    def _make_room(self) -> None:
        """Let go of the least recently used dated stages before a new dated one is built, not after: a stage's
        build is the peak of a training (100M interactions: 19.4 GB sampled in a build, with the previous cut's
        stage still held), and the stages let go are the same either way. The stage of all the data counts for
        none: a caller that needs no dated stage after it lets them go first (:meth:`let_go_of_dated_stages`)."""
        if self.held is not None:
            dated = [t for t in self._built if t is not None]
            self._let_go(dated[: max(0, len(dated) + 1 - self.held)])

    def let_go_of_dated_stages(self) -> None:
        """Let go of every dated stage now, for a caller that asks for none of them again (their columns and rows
        stay cached): otherwise the last one is held through the build of the stage of all the data."""
        self._let_go([t for t in self._built if t is not None])

    def _let_go(self, times: Sequence[int | None]) -> None:
        for as_of in times:
            del self._built[as_of]
        if times:
            give_back_memory()  # a stage's arrays freed in the heap would otherwise stay with the process

    def _build(self, as_of: int | None) -> Stage:
        started = time.perf_counter()
        stage = build_stage(self.dataset, self.params, as_of)
        seconds = time.perf_counter() - started
        if self.echo and seconds >= self.SLOW_STAGE_SECONDS:
            when = "all the data" if as_of is None else f"{datetime.fromtimestamp(as_of, UTC):%Y-%m-%d %H:%M}"
            tqdm.write(f"  candidates and features as of {when}: {seconds:.0f} s")
        return stage

    def held_stages(self) -> list[int | None]:
        """The times whose stages are built now, least recently used first."""
        return list(self._built)

    def names(self, as_of: int | None) -> FeatureNames:
        """The columns the stage as of ``as_of`` can produce (remembered after the stage is let go)."""
        if as_of not in self._names:
            self.at(as_of)
        return self._names[as_of]

    def forget_before(self, moment: int) -> None:
        """Drop the stages and training rows of times before ``moment``: bounds memory over many cuts.

        Kept, the rows of every cut the backtest had trained on grew with the number of cuts.
        """
        for as_of in [t for t in self._built if t is not None and t < moment]:
            del self._built[as_of]
        if not self.keep_rows:
            for key in [k for k in self._rows if k[1] < moment]:  # every key holds its cut second
                del self._rows[key]

    def rows(
        self, kind: str, cut: int, names: FeatureNames | None, params: RankerParams, last_use: bool = False
    ) -> RowBlock | None:
        """One kind of training rows at one cut (cached; see :data:`ROW_KINDS`).

        ``names``: the columns wanted (``None``: every column the cut's stage can produce, as cached).
        ``last_use``: nothing will ask for these rows again, so the cache lets go of them (unless ``keep_rows``).
        """
        key = _row_key(kind, cut, params)
        if key not in self._rows:
            self._rows[key] = build_rows(kind, self.dataset.interactions, self.at(cut), cut, params, self.names(cut))
        block = self._rows.pop(key) if last_use and not self.keep_rows else self._rows[key]
        return _columns(block, self.names(cut), names)

    def prepare_rows(
        self, cuts: Sequence[int], params: RankerParams, kinds: Sequence[str] = (KNOWN,), names_at: Sequence[int] = ()
    ) -> None:
        """Build the rows of ``kinds`` missing at each of ``cuts``, and the columns of the stages at ``names_at``:
        on the engine's workers, all at once, when there is an engine; here otherwise, one stage at a time (each
        can be let go once its rows are built).
        """
        wanted = {cut: [k for k in kinds if _row_key(k, cut, params) not in self._rows] for cut in cuts}
        wanted = {cut: missing for cut, missing in wanted.items() if missing}
        wanted |= {cut: [] for cut in names_at if cut not in self._names and cut not in wanted}
        if not wanted:
            return
        # A bar on a terminal (None), with the time left: at 20M interactions a cut takes a minute or two.
        shown = None if self.echo else True
        with tqdm(total=len(wanted), desc="training cuts", unit="cut", leave=False, disable=shown) as bar:
            if self.engine is None:
                for cut, missing in wanted.items():
                    self.names(cut)
                    for kind in missing:
                        self.rows(kind, cut, None, params)
                    bar.update()
            else:
                for cut, names, rows in self.engine.rows_at(self.dataset, self.params, wanted, params):
                    self._names[cut] = names
                    self._rows.update(rows)
                    bar.update()

    def training_rows(
        self, cut: int, names: FeatureNames | None, params: RankerParams, last_use: bool = False
    ) -> RowBlock | None:
        """The rows a ranker learns from at one training cut, labelled by the ``label_days`` after it (cached)."""
        return self.rows(KNOWN, cut, names, params, last_use)

    def request_rows(
        self, cut: int, names: FeatureNames | None, params: RankerParams, known: bool, last_use: bool = False
    ) -> RowBlock | None:
        """Rows of requests with recent items at one training cut (cached): from users unknown at it (the visitor
        ranker's) or known at it (the recent-items ranker's)."""
        return self.rows(KNOWN_REQUESTS if known else VISITORS, cut, names, params, last_use)


class Result(Protocol):
    def result(self) -> Any: ...


class RowEngine(Protocol):
    """Runs training cuts and backtest folds somewhere else (train/engine.py: on a Dask cluster)."""

    def submit(self, task: Callable[..., Any], dataset: Dataset, *args: Any) -> Result:
        """Run ``task(dataset, *args)`` there; the dataset is sent to the workers once."""
        ...

    def rows_at(
        self, dataset: Dataset, candidates: CandidateParams, wanted: dict[int, list[str]], params: RankerParams
    ) -> Iterator[tuple[int, FeatureNames, dict[RowKey, RowBlock | None]]]:
        """For each cut of ``wanted`` as it is done: the cut, its stage's columns, its rows of the kinds wanted."""
        ...


def build_stage(dataset: Dataset, params: CandidateParams, as_of: int | None) -> Stage:
    """The candidate model and every feature as of ``as_of``, from the interactions before it (``None``: all)."""
    # Each reads the interactions before ``as_of`` itself: a copy made here too stayed alive through both.
    candidates = CandidateModel.fit(dataset.interactions, params, as_of)
    tables = compute_features(dataset, as_of)
    return Stage(candidates, FeatureView(tables, candidates.item_ids, candidates.als.item_factors), tables)


def cut_rows(
    dataset: Dataset, candidates: CandidateParams, cut: int, kinds: Sequence[str], params: RankerParams
) -> tuple[FeatureNames, dict[RowKey, RowBlock | None]]:
    """Build the stage at ``cut`` and the rows of ``kinds`` there, with every column it has (an engine's task)."""
    stage = build_stage(dataset, candidates, cut)
    names = stage.view.available()
    return names, {
        _row_key(kind, cut, params): build_rows(kind, dataset.interactions, stage, cut, params, names) for kind in kinds
    }


def build_rows(
    kind: str, interactions: pd.DataFrame, stage: Stage, cut: int, params: RankerParams, names: FeatureNames
) -> RowBlock | None:
    """One kind of rows at a cut, from its stage (``None``: no example there)."""
    if kind == KNOWN:
        return _labelled_rows(stage, fresh_items(interactions, cut, cut + params.label_days * DAY), params, names)
    examples = request_examples(interactions, cut, params, known=kind == KNOWN_REQUESTS)
    return _request_rows(stage, examples, params, names)


def _row_key(kind: str, cut: int, params: RankerParams) -> RowKey:
    """The cache key of one kind of rows at a cut: the cut second, and every setting the rows depend on."""
    if kind not in ROW_KINDS:
        raise ValueError(f"unknown kind of rows {kind!r}: one of {ROW_KINDS}")
    key = (kind, cut, params.label_days, params.n_candidates, params.users_per_cut, params.seed)
    return key if kind == KNOWN else (*key, params.recent_items_passed)


def training_cuts(until: int, params: RankerParams) -> list[int]:
    """The cuts whose label windows end by ``until``, oldest first."""
    last = until - params.label_days * DAY
    return [last - round(params.cut_step_days * DAY * j) for j in range(params.train_cuts - 1, -1, -1)]


def fresh_items(interactions: pd.DataFrame, start: int, end: int | None) -> dict[str, set[str]]:
    """Per user, the items taken in ``[start, end)`` that they had not taken before ``start``."""
    times = interactions[Columns.timestamp].to_numpy()
    in_window = (times >= start) & (times < end) if end is not None else times >= start
    return _new_items(interactions[Columns.user], interactions[Columns.item], times < start, in_window)


def taken_after(interactions: pd.DataFrame, before: np.ndarray, after: np.ndarray) -> dict[str, set[str]]:
    """Per user, the items of the rows at positions ``after`` that they have no row of at positions ``before``.

    Positions, not tables: the per-user split's parts are copies of most of the data, taken only while needed.
    """
    earlier, window = np.zeros(len(interactions), bool), np.zeros(len(interactions), bool)
    earlier[before], window[after] = True, True
    return _new_items(interactions[Columns.user], interactions[Columns.item], earlier, window)


def _new_items(users: pd.Series, items: pd.Series, before: np.ndarray, window: np.ndarray) -> dict[str, set[str]]:
    """Per user (in id order), the items of the ``window`` rows that the user has no ``before`` row of.

    On integer codes, and each item id one string shared by every set: at 20M interactions a pandas merge of
    the string pairs took 1 GB for a moment, and the sets, a string per pair, outlive it.
    """
    user_codes, user_ids = pd.factorize(users, sort=True)  # codes in id order, so the pairs come out by user id
    item_codes, item_ids = pd.factorize(items)
    pairs = user_codes.astype(np.int64) * len(item_ids) + item_codes
    taken, new = _distinct(pairs[before]), _distinct(pairs[window])
    owners, fresh = np.divmod(new[~np.isin(new, taken, assume_unique=True)], len(item_ids))
    if not len(owners):
        return {}
    names, item_names = user_ids.to_numpy(dtype=object), item_ids.to_numpy(dtype=object)
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]).tolist()
    return {
        names[owners[first]]: set(item_names[fresh[first:last]].tolist())
        for first, last in zip(starts, [*starts[1:], len(owners)], strict=True)
    }


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted: numpy 2.4's ``np.unique`` hashes integers and took 20 s for 16M pair codes
    that a sort dedupes in 0.2 s."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def fit_ranker(
    stages: Stages, until: int, params: RankerParams, serve_at: int | None, show_progress: bool = True
) -> tuple[Ranker, dict[str, Any]]:
    """Train on the cuts before ``until`` (labels never reach ``until``) for serving the stage at ``serve_at``.

    The ranker's columns are those every training stage and the served stage can produce.
    """
    cuts = cuts_with_history(stages, until, params)
    if not cuts:
        span = (until - int(stages.dataset.interactions[Columns.timestamp].min())) / DAY
        raise NotEnoughHistory(
            f"the interactions span {span:.1f} days; the ranker learns from what users take in the "
            f"{params.label_days} days after a cut, with history before it: add data or lower --label-days"
        )
    stages.prepare_rows(cuts, params)
    names = common_names([stages.names(serve_at), *(stages.names(t) for t in cuts)])
    blocks = [b for b in (stages.training_rows(t, names, params) for t in cuts) if b is not None]
    names, blocks = _without(params.exclude_features, names, blocks)
    ranker, stats = fit_on_blocks(blocks, names, params, show_progress)
    if ranker is None:
        raise _no_rows(stages, cuts, params)
    return ranker, {"cuts": [datetime.fromtimestamp(t, UTC).isoformat() for t in cuts], **stats}


@dataclass(frozen=True)
class Rankers:
    """The models a ranker folder holds: the main one, and those for requests with recent items when trained."""

    main: Ranker
    visitors: Ranker | None
    recent: Ranker | None


def fit_rankers(
    stages: Stages,
    until: int,
    params: RankerParams,
    serve_at: int | None,
    show_progress: bool = True,
    rows_needed_later: bool = True,
) -> tuple[Rankers, dict[str, Any]]:
    """The main ranker and the two for requests with recent items, on the same cuts before ``until``.

    Every kind of row is built at a cut while its stage is held, so the three fits build each stage once.
    ``rows_needed_later``: whether anything (a backtest) asks for these cuts' rows or stages later; if not, the cuts'
    stages go once their rows are built, and each fit lets go of the rows only it reads before CatBoost's fit, the
    largest part of this step's memory at 20M interactions.
    """
    kinds = ROW_KINDS if params.recent_items_passed else (KNOWN,)
    stages.prepare_rows(cuts_with_history(stages, until, params), params, kinds)
    last_use = not rows_needed_later
    if last_use:
        stages.let_go_of_dated_stages()  # the fits read cached rows; the served stage is built without them
    ranker, stats = fit_ranker(stages, until, params, serve_at=serve_at, show_progress=show_progress)
    visitor_ranker, visitor_stats = fit_visitor_ranker(stages, until, params, ranker.names, last_use=last_use)
    stats["visitor_ranker"] = {k: v for k, v in visitor_stats.items() if k != "params"}
    recent_ranker, recent_stats = fit_recent_ranker(stages, until, params, ranker.names, last_use=last_use)
    stats["recent_ranker"] = {k: v for k, v in recent_stats.items() if k != "params"}
    return Rankers(ranker, visitor_ranker, recent_ranker), stats


def fit_visitor_ranker(
    stages: Stages, until: int, params: RankerParams, names: FeatureNames, last_use: bool = False
) -> tuple[Ranker | None, dict[str, Any]]:
    """The ranker for visitors with recent items, on the same cuts and columns as the main one (None: no examples).

    A visitor has no stored history, so every user column comes from the
    request's recent items; the main ranker never saw such rows.
    """
    return _fit_request_ranker(stages, until, params, names, known=False, last_use=last_use)


def fit_recent_ranker(
    stages: Stages, until: int, params: RankerParams, names: FeatureNames, last_use: bool = False
) -> tuple[Ranker | None, dict[str, Any]]:
    """The ranker for known users' requests with recent items, on the main one's cuts and columns (None: none).

    Such a request adds what the user just did to a stored history, which no
    row of the main ranker has. It learns from the main ranker's rows and
    such requests together: the requests alone are too few (docs/quality.md),
    and taught to the main ranker they cost every stored-history answer.
    """
    return _fit_request_ranker(stages, until, params, names, known=True, last_use=last_use)


def _fit_request_ranker(
    stages: Stages, until: int, params: RankerParams, names: FeatureNames, known: bool, last_use: bool
) -> tuple[Ranker | None, dict[str, Any]]:
    if not params.recent_items_passed:
        return None, {"rows": 0}
    cuts = cuts_with_history(stages, until, params)
    # One list holds the blocks, which fit_on_blocks empties: with ``last_use`` nothing else does then (a name bound
    # by := in a comprehension is the function's, and kept the last block through the fit).
    blocks = [b for b in (stages.request_rows(t, names, params, known, last_use) for t in cuts) if b is not None]
    if known and blocks:
        blocks += [b for b in (stages.training_rows(t, names, params, last_use) for t in cuts) if b is not None]
    return fit_on_blocks(blocks, names, params, show_progress=False)


def cuts_with_history(stages: Stages, until: int, params: RankerParams) -> list[int]:
    """The training cuts before ``until`` with some interactions before them (a cut needs history)."""
    first = int(stages.dataset.interactions[Columns.timestamp].min())
    return [t for t in training_cuts(until, params) if t > first]


def _without(
    excluded: tuple[str, ...], names: FeatureNames, blocks: list[RowBlock]
) -> tuple[FeatureNames, list[RowBlock]]:
    """The names and row blocks without the ``excluded`` columns (rows are cached with every column)."""
    if not excluded:
        return names, blocks
    kept = FeatureNames(
        tuple(n for n in names.numeric if n not in excluded), tuple(n for n in names.categorical if n not in excluded)
    )
    return kept, [block for b in blocks if (block := _columns(b, names, kept)) is not None]


def _columns(block: RowBlock | None, have: FeatureNames, want: FeatureNames | None) -> RowBlock | None:
    """A block built with the columns ``have``, with only the columns ``want`` (``None``: as it is), in that order."""
    if block is None or want is None or want == have:
        return block
    numeric = [have.numeric.index(n) for n in want.numeric]
    categorical = [have.categorical.index(n) for n in want.categorical]
    return RowBlock(
        np.asfortranarray(block.numeric[:, numeric]), block.categorical[:, categorical], block.labels, block.queries
    )


def _no_rows(stages: Stages, cuts: list[int], params: RankerParams) -> NotEnoughHistory:
    inter = stages.dataset.interactions
    taken = [fresh_items(inter, t, t + params.label_days * DAY) for t in cuts]
    took = sum(len(t) for t in taken)
    known = sum(u in stages.at(t).candidates.user_index for t, users in zip(cuts, taken, strict=True) for u in users)
    return NotEnoughHistory(
        f"not enough history to train the ranker: over {len(cuts)} training cuts, {took} users took a new "
        f"item in the {params.label_days} days after a cut, {known} of them with history before it, and none "
        f"had it among their {params.n_candidates} candidates; need at least 1 (add data, or raise "
        "--label-days, --train-cuts or --n-candidates)"
    )


def example_rows(
    stage: Stage, taken: dict[str, set[str]], params: RankerParams
) -> tuple[FeatureNames, RowBlock | None]:
    """A stage's candidates labelled by the items each user took next, with every column the stage has."""
    names = stage.view.available()
    return names, _labelled_rows(stage, taken, params, names)


def fit_on_examples(
    rows: RowBlock | None, have: FeatureNames, names: FeatureNames, params: RankerParams, show_progress: bool = True
) -> tuple[Ranker, dict[str, Any]]:
    """Fit on :func:`example_rows` (built with the columns ``have``) using the columns ``names``
    (the per-user table's ranker)."""
    block = _columns(rows, have, names)
    ranker, stats = fit_on_blocks([block] if block is not None else [], names, params, show_progress)
    if ranker is None:
        raise NotEnoughHistory("not enough history to train the ranker: no user had a next item among the candidates")
    return ranker, stats


def fit_on_blocks(
    blocks: list[RowBlock], names: FeatureNames, params: RankerParams, show_progress: bool = True
) -> tuple[Ranker | None, dict[str, Any]]:
    """The prior, then CatBoost boosted from it, on the rows of every block (``rows`` 0: nothing to fit).

    Empties ``blocks`` once their rows are gathered (several are copied into one array, a lone one is used as it
    is), so blocks the caller and the stages' cache no longer hold are freed before CatBoost's fit.
    """
    if not blocks:
        return None, {"rows": 0}
    # Column-major from the start: Ranker.data would otherwise copy the whole block to make it so. CatBoost's pool
    # reads the array in place, so one block (the per-user split's) is not copied at all.
    if len(blocks) == 1 and blocks[0].numeric.flags.f_contiguous and blocks[0].numeric.dtype == np.float32:
        numeric = blocks[0].numeric
    else:
        numeric = np.empty((sum(len(b.labels) for b in blocks), len(names.numeric)), dtype=np.float32, order="F")
        np.concatenate([b.numeric for b in blocks], out=numeric)
    categorical = np.concatenate([b.categorical for b in blocks])
    labels = np.concatenate([b.labels for b in blocks])
    # Query ids unique across blocks: the same user at two cuts is two queries.
    groups = np.concatenate([b.queries + (position << 32) for position, b in enumerate(blocks)])
    blocks.clear()
    prior = Prior.fit(numeric, names, labels) if params.prior else None
    baseline = prior.score(numeric, names) if prior is not None else None
    pool = Pool(Ranker.data(names, numeric, categorical), label=labels, group_id=groups, baseline=baseline)
    model = CatBoost(catboost_params(params))
    with tqdm(
        total=params.iterations,
        desc=f"ranker ({params.loss})",
        unit="it",
        leave=False,
        disable=None if show_progress else True,  # None: only on a terminal
    ) as bar:
        model.fit(pool, callbacks=[_Progress(bar)])
    importance = model.get_feature_importance(pool, type="PredictionValuesChange")
    stats = {
        "rows": int(pool.num_row()),
        "groups": len(np.unique(groups)),
        "positives": int(labels.sum()),
        "prior": prior.model_dump() if prior is not None else None,
        "feature_importance": {
            name: round(float(value), 3)
            for name, value in sorted(zip(names.all, importance, strict=True), key=lambda kv: -kv[1])
        },
        "params": asdict(params),
    }
    return Ranker(model, names, prior), stats


def common_names(available: Sequence[FeatureNames]) -> FeatureNames:
    """The columns every stage can produce (each stage's :meth:`FeatureView.available`), in the first's order."""
    first = available[0]
    shared = set.intersection(*(set(names.all) for names in available))
    return FeatureNames(
        tuple(n for n in first.numeric if n in shared), tuple(n for n in first.categorical if n in shared)
    )


def _labelled_rows(
    stage: Stage, taken: dict[str, set[str]], params: RankerParams, names: FeatureNames
) -> RowBlock | None:
    """Rows for one stage: candidates of users it knows, labelled 1 for the items they took next."""
    candidates = stage.candidates
    labels = {candidates.user_index[u]: items for u, items in taken.items() if u in candidates.user_index}
    users = sample_users(np.array(sorted(labels), dtype=np.int64), params.users_per_cut, params.seed)
    batch = candidates.top_n(users, params.n_candidates)
    hits = [np.isin(candidates.item_ids[c], list(labels[u])) for u, c in zip(users, batch.items, strict=True)]
    # A ranking pool needs each group (user) in one contiguous block, which
    # iterating users in order gives; groups without a positive teach nothing.
    keep = [i for i, h in enumerate(hits) if h.any()]
    if not keep:
        return None
    kept = CandidateBatch.gather([(batch, i) for i in keep])
    pipeline = TwoStageRecommender(candidates, None, stage.view, params.n_candidates)
    numeric, categorical = pipeline.pair_rows(users[keep], kept, names)
    queries = np.repeat(users[keep], [len(c) for c in kept.items])
    return RowBlock(numeric, categorical, np.concatenate([hits[i] for i in keep]).astype(np.float32), queries)


def request_examples(
    interactions: pd.DataFrame, cut: int, params: RankerParams, known: bool
) -> list[tuple[Query, set[str]]]:
    """Requests as a client sends them with recent items, and what each user took next.

    Each user with more than ``recent_items_passed`` interactions in the label
    window, among those unknown before the cut (visitors) or those known
    (``known``), passes the first ``recent_items_passed`` (time order, ties by
    item) as recent items; the label is the new items they took after those
    (for a known user, none they had taken before the cut). At most
    ``users_per_cut`` users, sampled.
    """
    times = interactions[Columns.timestamp]
    window = interactions[(times >= cut) & (times < cut + params.label_days * DAY)]
    before = interactions.loc[times < cut]
    counts = window.groupby(Columns.user, sort=True).size()
    users = counts.index[counts.to_numpy() > params.recent_items_passed]
    known_at_cut = is_in(users, before[Columns.user].unique())
    users = sample_users(np.asarray(users[known_at_cut if known else ~known_at_cut]), params.users_per_cut, params.seed)
    window = window[window[Columns.user].isin(users)].sort_values([Columns.timestamp, Columns.item], kind="stable")
    taken_before = (
        before[before[Columns.user].isin(users)].groupby(Columns.user, sort=False)[Columns.item].agg(set).to_dict()
        if known
        else {}  # visitors took nothing before the cut
    )
    out = []
    for user, rows in window.groupby(Columns.user, sort=True):  # each has more than recent_items_passed rows
        told, later = rows.iloc[: params.recent_items_passed], rows.iloc[params.recent_items_passed :]
        label = set(later[Columns.item]) - set(told[Columns.item]) - taken_before.get(user, set())
        if label:
            events = [
                RecentEvent(str(i), int(t), float(w))
                for i, t, w in zip(told[Columns.item], told[Columns.timestamp], told[Columns.weight], strict=True)
            ]
            out.append((Query(str(user), k=params.n_candidates, recent_items=events), label))
    return out


def _request_rows(
    stage: Stage, examples: list[tuple[Query, set[str]]], params: RankerParams, names: FeatureNames
) -> RowBlock | None:
    """Rows for requests with recent items, built by the request path itself."""
    if not examples:
        return None
    pipeline = TwoStageRecommender(stage.candidates, None, stage.view, params.n_candidates)
    queries = [q for q, _ in examples]
    batch, (numeric, categorical) = pipeline.query_rows(queries, names)
    ids = stage.candidates.item_ids
    hits = [np.isin(ids[c], list(label)) for c, (_, label) in zip(batch.items, examples, strict=True)]
    lengths = [len(c) for c in batch.items]
    keep = np.repeat([h.any() for h in hits], lengths)  # groups without a positive teach nothing
    if not keep.any():
        return None
    groups = np.repeat(np.arange(len(queries)), lengths)
    labels = np.concatenate(hits).astype(np.float32)[keep]
    return RowBlock(numeric[keep], categorical[keep], labels, groups[keep])


def catboost_params(params: RankerParams) -> dict[str, str | int | float | bool]:
    """CatBoost settings for a :class:`RankerParams`."""
    return {
        "loss_function": params.loss,
        "iterations": params.iterations,
        "depth": params.depth,
        "learning_rate": params.learning_rate,
        "random_seed": params.seed,
        "thread_count": params.threads,
        # One level of categorical combinations: most of the gain, a fraction of the time.
        "max_ctr_complexity": 1,
        # One Newton step per leaf, not ten: the fit a third faster, and the backtest no worse (0.1997 against
        # 0.1955 warm at 14 days with the same four cuts; docs/quality.md).
        "leaf_estimation_iterations": 1,
        "verbose": False,
        "allow_writing_files": False,
    }


def sample_users(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of at most ``limit`` users (all of them when fewer)."""
    if len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))


class _Progress:
    """CatBoost callback that advances a progress bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def after_iteration(self, info: object) -> bool:
        self.bar.update(1)
        return True
