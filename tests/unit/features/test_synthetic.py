"""The synthetic generator's block writer: bounded memory, the same rows as a plain reading of its draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import synthetic
from features.schema import Columns, load_dataset
from features.synthetic import SyntheticConfig


def _plain_reading(config: SyntheticConfig, blocks: int, block_draws: int) -> pd.DataFrame:
    """Every block's draws at once, repeated pairs dropped (first kept), the first n_interactions."""
    users_c, items_c = synthetic.clusters(config)
    popularity, activity = synthetic._popularity_and_activity(config, np.random.default_rng([config.seed, 3]))
    draws = [
        synthetic._draw(
            config,
            np.random.default_rng([config.seed, 4, block]),
            users_c,
            items_c,
            popularity,
            activity,
            block_draws,
        )
        for block in range(blocks)
    ]
    frame = pd.DataFrame(
        {"user": np.concatenate([u for u, _ in draws]), "item": np.concatenate([i for _, i in draws])}
    ).drop_duplicates()
    return frame.head(config.n_interactions)


def test_blocks_write_each_first_drawn_pair_once_in_draw_order(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_DRAWS", 500)
    config = SyntheticConfig(n_users=100, n_items=60, n_interactions=1500)
    paths, written, notes = synthetic.write_in_blocks(config, tmp_path)
    table = pq.read_table(paths["interactions"]).to_pandas()
    assert written == len(table) == 1500 and notes == []
    assert pq.ParquetFile(paths["interactions"]).metadata.num_row_groups > 3  # pairs repeat across blocks
    expected = _plain_reading(config, blocks=20, block_draws=500)
    assert table[Columns.user].tolist() == [f"u{u}" for u in expected["user"]]
    assert table[Columns.item].tolist() == [f"i{i}" for i in expected["item"]]


def test_blocks_plant_the_clusters_and_load_as_user_files(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_DRAWS", 4096)
    config = SyntheticConfig(n_users=400, n_items=300, n_interactions=6000)
    paths, _, _ = synthetic.write_in_blocks(config, tmp_path)
    dataset = load_dataset(paths["interactions"], paths["users"], paths["items"])
    inter = dataset.interactions
    users_c, items_c = synthetic.clusters(config)
    same_cluster = users_c[inter[Columns.user].str[1:].astype(int)] == items_c[inter[Columns.item].str[1:].astype(int)]
    assert ((inter[Columns.weight] >= 4) == same_cluster).all()  # 4-5 stars exactly inside the user's cluster
    assert 0.8 < same_cluster.mean() < 0.95  # in_cluster_share 0.85, plus out-of-cluster draws that land inside
    assert inter[Columns.timestamp].between(synthetic.START, synthetic.START + synthetic.SPAN_SECONDS).all()
    assert len(dataset.users) == 400 and len(dataset.items) == 300


def test_blocks_are_reproducible_and_stop_short_with_a_note(tmp_path):
    config = SyntheticConfig(n_users=30, n_items=20, n_interactions=5000)
    first, written, notes = synthetic.write_in_blocks(config, tmp_path / "a")
    again, _, _ = synthetic.write_in_blocks(config, tmp_path / "b")
    assert written == 600  # every (user, item) pair, once
    assert notes and "600 distinct" in notes[0]
    for name in first:
        assert first[name].read_bytes() == again[name].read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "csv"], "--in-blocks writes parquet only"),
        (["--users", "10000000", "--items", "10000000"], "bitmap of written pairs"),
    ],
)
def test_the_block_writer_refuses_what_it_cannot_do_with_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path), "--in-blocks", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
