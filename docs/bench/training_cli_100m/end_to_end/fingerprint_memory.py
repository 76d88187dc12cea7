"""Peak memory of the data's fingerprint, the old way (every cell mapped) or the new, in a fresh process.

PYTHONPATH=. python docs/bench/training_cli_100m/end_to_end/fingerprint_memory.py old|new DATA_DIR
"""

import hashlib
import resource
import sys
import time
from pathlib import Path

import pandas as pd

from features.schema import Dataset
from features.store import fingerprint
from stages.memory import give_back_memory
from train.config import TrainConfig
from train.run import load_data


def old_fingerprint(dataset: Dataset) -> str:
    """features.store.fingerprint before session 49."""
    digest = hashlib.sha256()
    for frame in (dataset.interactions, dataset.users, dataset.items):
        if frame is None:
            digest.update(b"-")
            continue
        flat = frame.reset_index() if frame.index.name else frame
        flat = flat.map(lambda v: "|".join(v) if isinstance(v, tuple) else v)
        digest.update(pd.util.hash_pandas_object(flat, index=False).to_numpy().tobytes())
        digest.update(",".join(map(str, flat.columns)).encode())
    return digest.hexdigest()


def resident_mb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(way: str, data: str) -> None:
    files = {name: f"{data}/{name}.parquet" for name in ("interactions", "users", "items")}
    dataset = load_data(TrainConfig(**files))
    give_back_memory()
    print(f"{way}: after loading resident {resident_mb()} MB (peak so far {peak_mb()} MB)")
    started = time.perf_counter()
    digest = (old_fingerprint if way == "old" else fingerprint)(dataset)
    print(f"{way}: fingerprint {time.perf_counter() - started:.2f} s, peak so far {peak_mb()} MB, {digest[:12]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
