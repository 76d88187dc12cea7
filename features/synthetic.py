"""Seeded synthetic data in the documented schema, with structure planted.

Users and items belong to taste clusters; a user picks items from their own
cluster most of the time, item popularity is Zipf-skewed, the user's
``region`` and the item's ``genres`` reveal the cluster. A working model
recovers the clusters; a broken one does not. Usage::

    python -m features.synthetic --out var/synthetic --format parquet --users 6040 --items 3706 --interactions 1000000

``--in-blocks`` draws and writes the interactions a block at a time, so 100M
of them need about 2 GB rather than about 33 GB; its rows (and the attribute
tables' values) differ from the in-memory draw of the same seed (each block has
its own seeded generator) but are just as reproducible.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.schema import LIST_SEPARATOR, Columns, Dataset, finalize

START = 1_704_067_200  # 2024-01-01T00:00:00Z
SPAN_SECONDS = 365 * 24 * 3600
MAX_ROUNDS = 8
# Draws per block of --in-blocks. Fixed, not a setting: the rows depend on the
# config alone, never on how much memory the writing machine had.
BLOCK_DRAWS = 1 << 22
# The pairs already written are one bit each; above this many bytes (users x
# items / 8) the bitmap itself would crowd the machine.
MAX_BITMAP_BYTES = 4 << 30


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and strength of the planted structure."""

    n_users: int = 600
    n_items: int = 400
    n_interactions: int = 30_000
    n_clusters: int = 6
    in_cluster_share: float = 0.85
    attribute_signal: float = 0.8
    seed: int = 42


def clusters(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """The planted cluster of every user and every item, by index (``u12`` is users[12]): the ground truth."""
    return _user_clusters(config), _item_clusters(config)


def user_cluster(user_id: str, config: SyntheticConfig) -> int:
    """The planted cluster of a generated user (tests use it as ground truth)."""
    return _user_clusters(config)[int(user_id[1:])]


def item_cluster(item_id: str, config: SyntheticConfig) -> int:
    """The planted cluster of a generated item."""
    return _item_clusters(config)[int(item_id[1:])]


def _user_clusters(config: SyntheticConfig) -> np.ndarray:
    return np.random.default_rng([config.seed, 1]).integers(0, config.n_clusters, config.n_users)


def _item_clusters(config: SyntheticConfig) -> np.ndarray:
    return np.random.default_rng([config.seed, 2]).integers(0, config.n_clusters, config.n_items)


def generate(config: SyntheticConfig = SyntheticConfig()) -> Dataset:
    """Build the dataset in memory; same config, same data."""
    rng = np.random.default_rng([config.seed, 3])
    users_c, items_c = _user_clusters(config), _item_clusters(config)
    popularity, activity = _popularity_and_activity(config, rng)

    # Repeated (user, item) pairs are dropped, so draw more until the target is
    # met; skewed popularity inside small clusters can make it unreachable.
    user_idx, item_idx = np.empty(0, np.int64), np.empty(0, np.int64)
    for _ in range(MAX_ROUNDS):
        users, items = _draw(
            config, rng, users_c, items_c, popularity, activity, int(config.n_interactions * 1.6) + 100
        )
        user_idx, item_idx = np.concatenate([user_idx, users]), np.concatenate([item_idx, items])
        _, first = np.unique(user_idx * config.n_items + item_idx, return_index=True)
        if len(first) >= config.n_interactions:
            break
    keep = np.sort(first)[: config.n_interactions]
    user_idx, item_idx = user_idx[keep], item_idx[keep]
    notes = []
    if len(keep) < config.n_interactions:
        notes.append(
            f"asked for {config.n_interactions:,} interactions; {len(keep):,} distinct (user, item) pairs "
            "came out at this many users and items: add users or items for more"
        )
    rating, timestamps = _ratings_and_times(rng, users_c[user_idx] == items_c[item_idx])
    interactions = pd.DataFrame(
        {
            Columns.user: np.char.add("u", user_idx.astype(str)).astype(object),
            Columns.item: np.char.add("i", item_idx.astype(str)).astype(object),
            Columns.timestamp: timestamps,
            Columns.weight: rating,
        }
    )
    return finalize(Dataset(interactions, _users(config, users_c, rng), _items(config, items_c, rng), notes))


def _popularity_and_activity(config: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-skewed item popularity in a random order, and each user's share of the draws."""
    popularity = 1.0 / np.power(rng.permutation(config.n_items) + 1.0, 0.9)
    activity = rng.lognormal(0.0, 0.8, config.n_users)
    return popularity, activity / activity.sum()


def _ratings_and_times(rng: np.random.Generator, match: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-5 stars inside the user's cluster, 1-3 outside; times uniform over the year."""
    rating = np.where(match, rng.integers(4, 6, match.size), rng.integers(1, 4, match.size))
    timestamps = START + rng.integers(0, SPAN_SECONDS, match.size)
    return rating.astype(np.float32), timestamps.astype(np.int64)


INTERACTIONS_SCHEMA = pa.schema(
    [
        (Columns.user, pa.string()),
        (Columns.item, pa.string()),
        (Columns.timestamp, pa.int64()),
        (Columns.weight, pa.float32()),
    ]
)


def write_in_blocks(config: SyntheticConfig, out: Path) -> tuple[dict[str, Path], int, list[str]]:
    """Draw and write the interactions a block at a time, in bounded memory.

    Why: ``generate`` holds every draw, the distinct-pair search and a Python
    string per id at once (about 33 GB at 100M). Here a bit per possible
    (user, item) pair remembers what was written, and only one block of draws
    is alive, written as it is drawn. Returns the paths, the number of
    interactions written and notes.
    """
    problem = blocks_problem(config)
    if problem:
        raise ValueError(problem)
    bitmap_bytes = -(-config.n_users * config.n_items // 8)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in ("interactions", "users", "items")}
    users_c, items_c = _user_clusters(config), _item_clusters(config)
    popularity, activity = _popularity_and_activity(config, np.random.default_rng([config.seed, 3]))
    written_pairs = np.zeros(bitmap_bytes, np.uint8)
    written, block = 0, 0
    max_blocks = -(-MAX_ROUNDS * (int(config.n_interactions * 1.6) + 100) // BLOCK_DRAWS)
    with pq.ParquetWriter(paths["interactions"], INTERACTIONS_SCHEMA) as writer:
        while written < config.n_interactions and block < max_blocks:
            rng = np.random.default_rng([config.seed, 4, block])
            user_idx, item_idx = _draw(config, rng, users_c, items_c, popularity, activity, BLOCK_DRAWS)
            keep = _first_new_pairs(user_idx * config.n_items + item_idx, written_pairs)
            keep = keep[: config.n_interactions - written]
            user_idx, item_idx = user_idx[keep], item_idx[keep]
            _mark_written(user_idx * config.n_items + item_idx, written_pairs)
            rating, timestamps = _ratings_and_times(rng, users_c[user_idx] == items_c[item_idx])
            columns = [
                pa.array(np.char.add("u", user_idx.astype(str))),
                pa.array(np.char.add("i", item_idx.astype(str))),
                pa.array(timestamps),
                pa.array(rating),
            ]
            if keep.size:
                writer.write_table(pa.Table.from_arrays(columns, schema=INTERACTIONS_SCHEMA))
            written += keep.size
            block += 1
    notes = []
    if written < config.n_interactions:
        notes.append(
            f"asked for {config.n_interactions:,} interactions; {written:,} distinct (user, item) pairs "
            "came out at this many users and items: add users or items for more"
        )
    attributes = np.random.default_rng([config.seed, 5])
    pq.write_table(pa.Table.from_pandas(_users(config, users_c, attributes).reset_index()), paths["users"])
    items = _items(config, items_c, attributes).reset_index()
    items["genres"] = items["genres"].map(list)
    pq.write_table(pa.Table.from_pandas(items), paths["items"])
    return paths, written, notes


def blocks_problem(config: SyntheticConfig) -> str | None:
    """Why :func:`write_in_blocks` cannot write this config, if it cannot."""
    bitmap_bytes = -(-config.n_users * config.n_items // 8)
    if bitmap_bytes > MAX_BITMAP_BYTES:
        return (
            f"{config.n_users:,} users x {config.n_items:,} items need a {bitmap_bytes / 2**30:.1f} GiB bitmap of "
            f"written pairs, over {MAX_BITMAP_BYTES / 2**30:.0f} GiB: use fewer users or items"
        )
    return None


def _first_new_pairs(keys: np.ndarray, written_pairs: np.ndarray) -> np.ndarray:
    """Positions, in draw order, of each key's first draw in the block, unless an earlier block wrote it."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(keys.size, bool)
    first[1:] = ordered[1:] != ordered[:-1]
    positions = np.sort(order[first])
    drawn = keys[positions]
    already = (written_pairs[drawn >> 3] >> (drawn & 7).astype(np.uint8)) & 1
    return positions[already == 0]


def _mark_written(keys: np.ndarray, written_pairs: np.ndarray) -> None:
    """Set each key's bit; keys are distinct, but several can share a byte, hence the per-byte OR."""
    if not keys.size:
        return
    keys = np.sort(keys)
    byte = keys >> 3
    bits = np.left_shift(np.uint8(1), (keys & 7).astype(np.uint8))
    starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
    written_pairs[byte[starts]] |= np.bitwise_or.reduceat(bits, starts)


def _draw(
    config: SyntheticConfig,
    rng: np.random.Generator,
    users_c: np.ndarray,
    items_c: np.ndarray,
    popularity: np.ndarray,
    activity: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` (user, item) draws: users by activity, items mostly from the user's cluster."""
    user_idx = rng.choice(config.n_users, size=size, p=activity).astype(np.int64)
    in_cluster = rng.random(size) < config.in_cluster_share
    item_idx = rng.choice(config.n_items, size=size, p=popularity / popularity.sum()).astype(np.int64)
    for cluster in range(config.n_clusters):
        members = np.flatnonzero(items_c == cluster)
        take = np.flatnonzero(in_cluster & (users_c[user_idx] == cluster))
        if members.size and take.size:
            p = popularity[members] / popularity[members].sum()
            item_idx[take] = members[rng.choice(members.size, size=take.size, p=p)]
    return user_idx, item_idx


def _users(config: SyntheticConfig, clusters: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    noisy = rng.random(config.n_users) >= config.attribute_signal
    region = np.where(noisy, rng.integers(0, config.n_clusters, config.n_users), clusters)
    return pd.DataFrame(
        {
            "age": (18 + 6 * clusters + rng.integers(0, 10, config.n_users)).astype(np.float64),
            "region": [f"r{r}" for r in region],
        },
        index=pd.Index([f"u{i}" for i in range(config.n_users)], name=Columns.user),
    )


def _items(config: SyntheticConfig, clusters: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    extra = rng.integers(0, config.n_clusters, config.n_items)
    noisy = rng.random(config.n_items) >= config.attribute_signal
    genres = [
        tuple(sorted({f"g{c}", f"g{e}"})) if n else (f"g{c}",) for c, e, n in zip(clusters, extra, noisy, strict=True)
    ]
    return pd.DataFrame(
        {
            Columns.title: [f"Item {i}" for i in range(config.n_items)],
            "price": np.round(rng.uniform(1, 50, config.n_items), 2),
            "genres": genres,
        },
        index=pd.Index([f"i{i}" for i in range(config.n_items)], name=Columns.item),
    )


def write(dataset: Dataset, out: Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write the three files; CSV gets ISO 8601 times and ``|`` lists, parquet lists."""
    out.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions.copy()
    items = dataset.items.reset_index() if dataset.items is not None else None
    users = dataset.users.reset_index() if dataset.users is not None else None
    # Every format writes all three files: the dataset must have both attribute tables (generate() always does).
    assert items is not None and users is not None
    paths = {name: out / f"{name}.{fmt}" for name in ("interactions", "users", "items")}
    if fmt == "csv":
        inter[Columns.timestamp] = pd.to_datetime(inter[Columns.timestamp], unit="s", utc=True).map(
            lambda t: t.isoformat()
        )
        inter.to_csv(paths["interactions"], index=False)
        users.to_csv(paths["users"], index=False)
        items["genres"] = items["genres"].map(LIST_SEPARATOR.join)
        items.to_csv(paths["items"], index=False)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(inter, preserve_index=False), paths["interactions"])
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), paths["users"])
        items["genres"] = items["genres"].map(list)
        pq.write_table(pa.Table.from_pandas(items, preserve_index=False), paths["items"])
    else:
        raise ValueError(f"unknown format {fmt!r}; use csv or parquet")
    return paths


def main(argv: list[str] | None = None) -> None:
    """CLI: write a synthetic dataset of any size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", choices=["csv", "parquet"], default="parquet")
    defaults = SyntheticConfig()
    parser.add_argument("--users", type=int, default=defaults.n_users)
    parser.add_argument("--items", type=int, default=defaults.n_items)
    parser.add_argument("--interactions", type=int, default=defaults.n_interactions)
    parser.add_argument("--clusters", type=int, default=defaults.n_clusters)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--in-blocks",
        action="store_true",
        help="draw and write the interactions a block at a time (parquet only): bounded memory for 100M rows",
    )
    args = parser.parse_args(argv)
    config = SyntheticConfig(args.users, args.items, args.interactions, args.clusters, seed=args.seed)
    if args.in_blocks:
        if args.format != "parquet":
            parser.error("--in-blocks writes parquet only")
        problem = blocks_problem(config)
        if problem:
            parser.error(problem)
        paths, written, notes = write_in_blocks(config, args.out)
        _report(notes, written, paths)
        return
    dataset = generate(config)
    _report(dataset.notes, len(dataset.interactions), write(dataset, args.out, args.format))


def _report(notes: list[str], n_interactions: int, paths: dict[str, Path]) -> None:
    for note in notes:
        print(f"note: {note}")
    print(f"{n_interactions:,} interactions")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
