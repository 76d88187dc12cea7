"""Offline batch recommendations: top-k for every user into one parquet file.

For teams that run recommendations as a nightly job instead of an API. It
loads the same models and feature snapshot as the service and calls the same
pipeline, so its answers are the service's answers::

    python -m serving.batch --out var/recommendations.parquet --k 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import TypeAdapter, ValidationError
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from features.schema import Columns, id_text
from serving.api_models import AttributeFilter
from serving.responses import to_filters
from serving.runtime import IncompatibleModels, Runtime
from serving.settings import SettingsError, get_settings
from stages.pipeline import Query
from stages.rules import AttributeFilter as Rule
from stages.rules import RuleError, as_filters

CHUNK = 512


def recommend_all(
    runtime: Runtime, users: list[str], k: int, exclude_seen: bool = True, filters: dict[str, Rule] | None = None
) -> pa.Table:
    """One row per (user, rank); unknown users get the popularity fallback. Hidden items and ``filters`` apply."""
    columns: dict[str, list] = {
        Columns.user: [],
        Columns.rank: [],
        Columns.item: [],
        Columns.score: [],
        "strategy": [],
    }
    for start in tqdm(range(0, len(users), CHUNK), desc="users", unit="chunk", disable=None):
        queries = [Query(u, k, exclude_seen, filters=filters or {}) for u in users[start : start + CHUNK]]
        for answer in runtime.pipeline.recommend(queries):
            n = len(answer.item_ids)
            columns[Columns.user] += [answer.user_id] * n
            columns[Columns.rank] += list(range(1, n + 1))
            columns[Columns.item] += answer.item_ids
            columns[Columns.score] += answer.scores
            columns["strategy"] += [answer.strategy] * n
    return pa.table(columns)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m serving.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--out", type=Path, required=True, help="parquet file to write")
    cli.add_argument("--k", type=int, default=10)
    cli.add_argument("--users", type=Path, help="text file with one user id per line (default: every known user)")
    cli.add_argument("--include-seen", action="store_true", help="do not filter items the user already has")
    cli.add_argument(
        "--filters",
        help='item attribute rules as in the API, e.g. \'{"genres": {"include": ["Comedy"]}}\'',
    )
    args = cli.parse_args(argv)
    threadpool_limits(1)  # one thread per process, as in the service
    try:
        runtime = Runtime.from_settings(get_settings())
    except (SettingsError, IncompatibleModels) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.users:
        users = [id_text(line) for line in args.users.read_text().splitlines() if line.strip()]
    else:
        users = [str(u) for u in runtime.candidates.user_ids]
    try:
        filters = parse_filters(runtime, args.filters)
    except (ValueError, ValidationError, RuleError) as exc:
        print(f"error: --filters: {exc}", file=sys.stderr)
        return 2
    table = recommend_all(runtime, users, args.k, not args.include_seen, filters)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(args.out)  # readers never see a half-written file
    print(f"wrote {table.num_rows} rows for {len(users)} users to {args.out}")
    return 0


def parse_filters(runtime: Runtime, text: str | None) -> dict[str, Rule]:
    """``--filters`` JSON, checked as the API checks it and against the catalogue."""
    if not text:
        return {}
    filters = to_filters(TypeAdapter(dict[str, AttributeFilter]).validate_python(json.loads(text)))
    runtime.view.catalogue.check(as_filters(filters))
    return filters


if __name__ == "__main__":
    sys.exit(main())
