"""Seeded synthetic data in the documented schema, with structure planted.

Users and items belong to taste clusters; a user picks items from their own
cluster most of the time, item popularity is Zipf-skewed, the user's
``region`` and the item's ``genres`` reveal the cluster. A working model
recovers the clusters; a broken one does not. Usage::

    python -m features.synthetic --out var/synthetic --format parquet --users 6040 --items 3706 --interactions 1000000
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
    popularity = 1.0 / np.power(rng.permutation(config.n_items) + 1.0, 0.9)
    activity = rng.lognormal(0.0, 0.8, config.n_users)
    activity /= activity.sum()

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
    match = users_c[user_idx] == items_c[item_idx]
    rating = np.where(match, rng.integers(4, 6, keep.size), rng.integers(1, 4, keep.size))
    timestamps = START + rng.integers(0, SPAN_SECONDS, keep.size)

    interactions = pd.DataFrame(
        {
            Columns.user: np.char.add("u", user_idx.astype(str)).astype(object),
            Columns.item: np.char.add("i", item_idx.astype(str)).astype(object),
            Columns.timestamp: timestamps.astype(np.int64),
            Columns.weight: rating.astype(np.float32),
        }
    )
    return finalize(Dataset(interactions, _users(config, users_c, rng), _items(config, items_c, rng), notes))


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
    args = parser.parse_args(argv)
    config = SyntheticConfig(args.users, args.items, args.interactions, args.clusters, seed=args.seed)
    dataset = generate(config)
    for note in dataset.notes:
        print(f"note: {note}")
    paths = write(dataset, args.out, args.format)
    print(f"{len(dataset.interactions):,} interactions")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
