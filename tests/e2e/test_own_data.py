"""`python -m train` on files the way they really come: one small case file per case, generated here.

Each failure must exit 2 with its message and leave the model store and the
feature store byte-for-byte as they were; each success must save a model
that answers a known and an unknown user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.synthetic import SyntheticConfig, generate
from serving.runtime import Runtime
from stages.pipeline import POPULAR, TWO_STAGE, Query
from tests.support import tree_digest
from train.__main__ import EXIT_BAD_DATA, main
from train.config import build_config
from train.run import train

pytestmark = pytest.mark.slow

DAY = 86_400
T0 = 1_700_000_000  # 2023-11-14
QUICK = [
    "--ranker-iterations", "20", "--fold-iterations", "10", "--backtest-cuts", "1", "--train-cuts", "2",
    "--n-candidates", "20", "--als-iterations", "3", "--factors", "8", "--n-popular", "20", "--n-cooc", "10",
]  # fmt: skip
DATA = generate(SyntheticConfig(n_users=80, n_items=50, n_interactions=2500, n_clusters=3, seed=3))
INTER = DATA.interactions  # ids "u0", "i0"; timestamps unix seconds in 2024


@dataclass(frozen=True)
class Case:
    """Files written into a directory (returning the CLI arguments), what the run must print, who to ask."""

    name: str
    write: Callable[[Path], list[str]]
    messages: tuple[str, ...]
    known_user: str = "u0"
    known_message: str | None = None  # what the known user is told when nothing is left to recommend


def csv(directory: Path, frame: pd.DataFrame, name: str = "interactions.csv", **kwargs) -> list[str]:
    """The frame written as ``name``; the flag that passes it (``--items`` for items.csv, and so on)."""
    path = directory / name
    frame.to_csv(path, index=False, **kwargs)
    return [{"items.csv": "--items", "users.csv": "--users"}.get(name, "--interactions"), str(path)]


def with_row(frame: pd.DataFrame, position: int, **values) -> pd.DataFrame:
    """A copy with one row's cells replaced (``position`` counts data rows from 0)."""
    out = frame.astype({c: object for c in values}).copy()
    for column, value in values.items():
        out.iloc[position, out.columns.get_loc(column)] = value
    return out


def frame_of(users, items, times) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


def six_hourly(user_of: Callable[[int], str], item_of: Callable[[int], str], n: int = 400) -> pd.DataFrame:
    """``n`` interactions six hours apart (100 days), the k-th by ``user_of(k)`` on ``item_of(k)``."""
    return frame_of([user_of(k) for k in range(n)], [item_of(k) for k in range(n)], T0 + np.arange(n) * DAY // 4)


def random_with_one_heavy_user(seed: int = 1, n: int = 3000) -> pd.DataFrame:
    """No structure, one user with 90% of the rows: the ranker learns noise and loses to a baseline."""
    rng = np.random.default_rng(seed)
    users = np.where(rng.random(n) < 0.9, "heavy", np.char.add("u", rng.integers(0, 60, n).astype(str)))
    items = np.char.add("i", rng.integers(0, 80, n).astype(str))
    return frame_of(users, items, T0 + np.sort(rng.integers(0, 200 * DAY, n)))


def config_file(directory: Path, name: str, text: str, frame: pd.DataFrame = INTER) -> list[str]:
    path = directory / name
    path.write_text(text)
    return ["--config", str(path), *csv(directory, frame)]


def items_with_other_ids(directory: Path) -> list[str]:
    items = pd.DataFrame({"item_id": [f"{n}.5" for n in range(50)], "title": "x"})
    return [*csv(directory, INTER), *csv(directory, items, "items.csv")]


FAILURES = [
    Case(
        "date before 1990",
        lambda d: csv(d, with_row(INTER, 5, timestamp=86_400)),
        ("row 7 (header = row 1): '86400' read as unix seconds falls in the year 1970, outside 1990-",),
    ),
    Case(
        "NULL user id",
        lambda d: csv(d, with_row(INTER, 3, user_id="NULL")),
        ("column 'user_id': row 5 (header = row 1): missing id 'NULL'",),
    ),
    Case(
        "blank timestamp",
        lambda d: csv(d, with_row(INTER, 0, timestamp="")),
        ("column 'timestamp': row 2 (header = row 1): blank timestamp",),
    ),
    Case(
        "items file that matches no interaction",
        items_with_other_ids,
        ("items.csv: column 'item_id': only 0 of the 50 items in the interactions have a row here (under 10%)",),
    ),
    Case(
        "one user",
        lambda d: csv(d, six_hourly(lambda k: "u", lambda k: f"i{k % 50}")),
        ("not enough history to train the ranker: over 2 training cuts, 0 users took a new item",),
    ),
    Case(
        "one item",
        lambda d: csv(d, six_hourly(lambda k: f"u{k % 50}", lambda k: "i")),
        ("not enough history to train the ranker",),
    ),
    Case(
        "one interaction per user",
        lambda d: csv(d, six_hourly(lambda k: f"u{k}", lambda k: f"i{k % 30}")),
        ("0 of them with history before it",),
    ),
    Case(
        "only repeats",
        lambda d: csv(d, six_hourly(lambda k: f"u{k % 20}", lambda k: f"i{k % 20}")),
        ("not enough history to train the ranker",),
    ),
    Case(
        "huge sparse catalogue",
        lambda d: csv(d, six_hourly(lambda k: f"u{k % 40}", lambda k: f"i{k}")),
        ("had it among their 20 candidates; need at least 1",),
    ),
    Case(
        "worse than a baseline, made an error",
        lambda d: [*csv(d, random_with_one_heavy_user()), "--fail-if-worse-than-baseline"],
        ("in the backtest (warm users, 14 days): nothing saved (--fail-if-worse-than-baseline)",),
    ),
    Case(
        "column mapping naming a column no file has",
        lambda d: [*csv(d, INTER), "--columns", "usrId=user_id"],
        ("--columns maps 'usrId' to 'user_id', but no file has a column 'usrId'",),
    ),
    Case(
        "users parquet with a binary column",
        lambda d: users_parquet(d, pa.array([b"\x00\x01"] * 80, pa.binary())),
        ("users.parquet: column 'blob': parquet type binary cannot be read",),
    ),
    Case(
        "users parquet with a struct column",
        lambda d: users_parquet(d, pa.array([{"a": 1, "b": "x"}] * 80)),
        ("users.parquet: column 'blob': parquet type struct<a: int64, b: string> cannot be read",),
    ),
    Case("bad TOML", lambda d: config_file(d, "c.toml", "factors = [\n"), ("c.toml: not valid TOML",)),
    Case("YAML config", lambda d: config_file(d, "c.yaml", "factors: 8\n"), ("unsupported config format '.yaml'",)),
    Case("missing config", lambda d: ["--config", str(d / "absent.toml")], ("absent.toml: config file not found",)),
    Case(
        "unknown config key",
        lambda d: config_file(d, "c.toml", "ranker-iteration = 5\n"),
        ("c.toml: unknown key 'ranker-iteration' (did you mean 'ranker_iterations'?)",),
    ),
]


def users_parquet(directory: Path, blob: pa.Array) -> list[str]:
    """A users file whose ``blob`` column no attribute can be made of (it crashed the loader or became a feature)."""
    users = pa.table({"user_id": [f"u{n}" for n in range(80)], "age": list(range(80)), "blob": blob})
    pq.write_table(users, directory / "users.parquet")
    return [*csv(directory, INTER), "--users", str(directory / "users.parquet")]


def float_ids_in_parquet(directory: Path) -> list[str]:
    """Integer ids stored as floats in parquet (160.0) against an items CSV that writes them as 160."""
    numeric = INTER.assign(
        user_id=INTER["user_id"].str[1:].astype(float), item_id=INTER["item_id"].str[1:].astype(float)
    )
    numeric.to_parquet(directory / "interactions.parquet")
    items = DATA.items.reset_index().assign(item_id=lambda t: " " + t["item_id"].str[1:] + " ")
    return ["--interactions", str(directory / "interactions.parquet"), *csv(directory, items, "items.csv")]


def movielens_25m_style(directory: Path) -> list[str]:
    """userId;movieId;rating;timestamp with semicolons, a Latin-1 movies file: mapped, sniffed, decoded."""
    ratings = INTER.rename(columns={"user_id": "userId", "item_id": "movieId", "weight": "rating"})
    movies = DATA.items.reset_index().rename(columns={"item_id": "movieId"}).assign(title="Amélie")
    movies.to_csv(directory / "movies.csv", index=False, encoding="latin-1")
    return [
        *csv(directory, ratings, "ratings.csv", sep=";"),
        *["--items", str(directory / "movies.csv"), "--columns", "userId=user_id,movieId=item_id,rating=weight"],
    ]


def parquet_timestamps(directory: Path) -> list[str]:
    typed = INTER.assign(timestamp=pd.to_datetime(INTER["timestamp"], unit="s", utc=True).dt.as_unit("us"))
    typed.to_parquet(directory / "interactions.parquet")
    return ["--interactions", str(directory / "interactions.parquet")]


def iso_with_offsets(directory: Path) -> list[str]:
    local = pd.to_datetime(INTER["timestamp"], unit="s", utc=True).dt.tz_convert("Asia/Kolkata")
    return csv(directory, INTER.assign(timestamp=local.map(lambda t: t.isoformat())))


SUCCESSES = [
    Case("parquet timestamps", parquet_timestamps, ("timestamps read as timestamps (datetime64[us, UTC])",)),
    Case("ISO 8601 with offsets", iso_with_offsets, ("timestamps read as ISO 8601 text", "+05:30")),
    Case("float ids in parquet", float_ids_in_parquet, ("unix seconds",), known_user="0"),
    Case(
        "MovieLens-25M style columns, semicolons, Latin-1",
        movielens_25m_style,
        ("ratings.csv: read as semicolon-separated", "movies.csv: not UTF-8, read as Latin-1"),
    ),
    Case(
        "config file with dashed keys",
        lambda d: config_file(
            d,
            "c.toml",
            'label-days = 14\nmax_eval_users = 150\n[columns]\nrating = "weight"\n',
            INTER.rename(columns={"weight": "rating"}),
        ),
        ("unix seconds",),
    ),
    Case(
        "dates before 1990, allowed",
        lambda d: [*csv(d, INTER.assign(timestamp=INTER["timestamp"] - 40 * 365 * DAY)), "--allow-any-dates"],
        ("timestamps read as unix seconds (row 2: ",),
    ),
    Case(
        "worse than a baseline, warned",
        lambda d: csv(d, random_with_one_heavy_user()),
        ("WARNING: the two-stage model (NDCG@10 ",),
        known_user="heavy",  # took every item: answered, with nothing left and a message saying so
        known_message="nothing left to recommend: the user has already taken (or excluded) every item",
    ),
]


def run(args: list[str], tmp: Path, feature_store: Path, capsys) -> tuple[int, str, str]:
    """The CLI in process with the quick settings; its exit code, everything it printed, the ranker saved."""
    code = main([*args, *QUICK, "--feature-store", str(feature_store), "--report-dir", str(tmp / "reports")])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    saved = re.search(r"saved \S+, (recsys-ranker:\S+);", out)
    return code, out, saved.group(1) if saved else ""


def answers(ranker_tag: str, known: str, known_message: str | None = None) -> None:
    """The saved model answers a known user with the two-stage model and a stranger with popularity."""
    runtime = Runtime.from_store(ranker_tag, feature_store=None)
    mine, stranger = runtime.pipeline.recommend([Query(known, k=5), Query("never-seen-before", k=5)])
    assert mine.strategy == TWO_STAGE
    if known_message:
        assert mine.item_ids == [] and mine.message.startswith(known_message)
    else:
        assert mine.item_ids
    assert stranger.strategy == POPULAR and len(stranger.item_ids) == 5


@pytest.fixture(scope="module")
def seconds_run(tmp_path_factory) -> tuple[str, Path]:
    """The plain case, unix seconds in a CSV, trained through the CLI's own config path.

    Its ranker tag, and its feature store, which the failures must then leave as it is.
    """
    tmp = tmp_path_factory.mktemp("seconds")
    store = tmp / "feature_store"
    flags = dict(zip((f[2:].replace("-", "_") for f in QUICK[::2]), QUICK[1::2], strict=True))
    config = build_config({}, {**flags, "interactions": csv(tmp, INTER)[1], "feature_store": str(store)})
    result = train(config.model_copy(update={"report_dir": tmp / "reports"}), echo=False)
    return result.ranker_tag, store


@pytest.mark.parametrize("case", FAILURES, ids=lambda case: case.name)
def test_failure_exits_2_with_its_message_and_leaves_the_stores_alone(
    case, tmp_path, seconds_run, bentoml_home, capsys
):
    _, feature_store = seconds_run
    before = tree_digest(bentoml_home, feature_store)
    code, out, saved = run(case.write(tmp_path), tmp_path, feature_store, capsys)
    assert code == EXIT_BAD_DATA, out
    for message in case.messages:
        assert message in out
    assert "Traceback" not in out and not saved
    assert tree_digest(bentoml_home, feature_store) == before


@pytest.mark.parametrize("case", SUCCESSES, ids=lambda case: case.name)
def test_success_saves_a_model_that_answers(case, tmp_path, capsys):
    code, out, saved = run(case.write(tmp_path), tmp_path, tmp_path / "feature_store", capsys)
    assert code == 0, out
    for message in case.messages:
        assert message in out
    answers(saved, case.known_user, case.known_message)


def test_milliseconds_train_the_same_model_as_seconds(seconds_run, tmp_path, capsys):
    in_ms = INTER.assign(timestamp=INTER["timestamp"] * 1000)
    code, out, saved = run(csv(tmp_path, in_ms), tmp_path, tmp_path / "feature_store", capsys)
    assert code == 0 and "timestamps read as unix milliseconds" in out
    answers(saved, "u0")
    seconds, millis = Runtime.from_store(seconds_run[0]), Runtime.from_store(saved)
    np.testing.assert_array_equal(seconds.candidates.als.item_factors, millis.candidates.als.item_factors)
    queries = [Query(u, k=10) for u in sorted(INTER["user_id"].unique())]
    expected = [(r.item_ids, r.scores) for r in seconds.pipeline.recommend(queries)]
    assert [(r.item_ids, r.scores) for r in millis.pipeline.recommend(queries)] == expected
