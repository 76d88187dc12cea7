"""MovieLens-100K (GroupLens), taken from the ``recbole==1.2.1`` wheel on PyPI.

Only the wheel is downloaded (never installed: recbole pulls in torch); the
three files we need are extracted, checked against known hashes and cached
outside git. F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens
Datasets: History and Context. ACM TiiS 5, 4.
"""

from __future__ import annotations

import hashlib
import os
import shutil

# B404 (bandit): runs pip to download the dataset wheel
import subprocess  # nosec B404
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import Columns, DataError, Dataset, finalize, validate_interactions

WHEEL = "recbole==1.2.1"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}


def cache_dir() -> Path:
    """Where downloaded data lives: ``$RECSYS_DATA_DIR`` or ``~/.cache/recsys``."""
    return Path(os.environ.get("RECSYS_DATA_DIR", Path.home() / ".cache" / "recsys"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(target: Path | None = None) -> Path:
    """Return a directory holding the verified raw files, downloading if needed."""
    target = target or cache_dir() / "ml-100k"
    if all((target / n).exists() and _sha256(target / n) == h for n, h in SHA256.items()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        # B603 (bandit): fixed argv (this interpreter's pip), no shell
        subprocess.run(  # nosec B603
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for name, expected in SHA256.items():
                out = staging / name
                out.write_bytes(archive.read(MEMBER_DIR + name))
                if _sha256(out) != expected:
                    raise DataError(out, f"sha256 mismatch (expected {expected})")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), target)
    return target


def _read_atomic(path: Path) -> pd.DataFrame:
    # RecBole headers carry types ("user_id:token"); keep only the names.
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def load(directory: Path | None = None) -> Dataset:
    """MovieLens-100K in the project's schema (ratings become weights)."""
    directory = directory or fetch()
    inter = _read_atomic(directory / "ml-100k.inter").rename(columns={"rating": Columns.weight})
    interactions = validate_interactions(inter, directory / "ml-100k.inter")

    users = _read_atomic(directory / "ml-100k.user").set_index(Columns.user)
    users["age"] = users["age"].astype(np.float64)

    raw_items = _read_atomic(directory / "ml-100k.item")
    items = pd.DataFrame(
        {
            Columns.title: raw_items["movie_title"].to_numpy(),
            "release_year": pd.to_numeric(raw_items["release_year"], errors="coerce").to_numpy(),
            "genres": raw_items["class"].fillna("").map(lambda s: tuple(s.split())).to_numpy(),
        },
        index=pd.Index(raw_items[Columns.item].to_numpy(), name=Columns.item),
    )
    return finalize(Dataset(interactions, users, items))
