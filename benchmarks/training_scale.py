"""Training at scale: synthetic data at MovieLens-100K, -1M and -20M sizes and at the Netflix prize's (100M).

For each size: generate the data (seeded), write parquet, run the whole
training pipeline (in a fresh process, with a throwaway BentoML store and
feature store), and report wall time and peak resident memory per step; then
time single requests through the trained pipeline with the larger catalogue::

    python -m benchmarks.training_scale --sizes 1m,20m
    python -m benchmarks.training_scale --sizes 20m --engine local:2   # training cuts on two Dask workers

The rolling backtest is off unless ``--backtest-cuts`` says otherwise: this
measures what training costs (the backtest's quality is docs/quality.md's, and
at 20M each fold builds stages of minutes). The ``ci`` size runs in the test
suite (tests/e2e/test_training_scale.py), so this command cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

from train.kernels import restart_with_pinned_kernels

SIZES = {
    "ci": {"users": 300, "items": 200, "interactions": 12_000},
    "100k": {"users": 943, "items": 1_682, "interactions": 100_000},
    "1m": {"users": 6_040, "items": 3_706, "interactions": 1_000_000},
    "20m": {"users": 138_493, "items": 26_744, "interactions": 20_000_000},
    # Netflix-prize-sized; written by the generator's block writer (other rows than an in-memory draw would give).
    "100m": {"users": 480_189, "items": 17_770, "interactions": 100_000_000, "in_blocks": True},
}


def run_size(name: str, backtest_cuts: int, engine: str | None) -> dict:
    """One size in a child process, so peak memory is that run's own (with its engine's workers, if any)."""
    with tempfile.TemporaryDirectory(prefix=f"recsys-scale-{name}-") as tmp:
        env = {**os.environ, "BENTOML_HOME": f"{tmp}/bentoml", "OPENBLAS_NUM_THREADS": "1"}
        settings = ["--backtest-cuts", str(backtest_cuts), *(["--engine", engine] if engine else [])]
        # B603 (bandit): this interpreter running this module, no shell
        result = subprocess.run(  # nosec B603
            [sys.executable, "-m", "benchmarks.training_scale", "--child", name, "--tmp", tmp, *settings],
            env=env,
            capture_output=True,
            text=True,
        )
        print(result.stdout[-4000:], result.stderr[-2000:] if result.returncode else "", flush=True)
        if result.returncode != 0:
            return {"size": name, "error": f"exit {result.returncode}"}
        return json.loads(Path(tmp, "result.json").read_text())


def child(name: str, tmp: Path, backtest_cuts: int, engine: str | None) -> None:
    import numpy as np

    from serving.runtime import Runtime
    from stages.pipeline import Query
    from train.config import TrainConfig
    from train.run import train

    size = SIZES[name]
    start = time.perf_counter()
    # The generator in a process of its own: this one's peak is training's alone (at 20M an in-memory draw
    # peaks above training).
    shape = [f"--{key}={size[key]}" for key in ("users", "items", "interactions")]
    blocks = ["--in-blocks"] if size.get("in_blocks") else []
    generator = [sys.executable, "-m", "features.synthetic", "--out", str(tmp / "data"), "--clusters=20", "--seed=42"]
    generated = subprocess.run([*generator, *shape, *blocks], capture_output=True, text=True)  # nosec B603
    if generated.returncode:
        raise SystemExit(f"the generator failed: {generated.stderr[-2000:]}")
    files = {part: tmp / "data" / f"{part}.parquet" for part in ("interactions", "users", "items")}
    generate_s = time.perf_counter() - start
    generate_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    config = TrainConfig(
        interactions=files["interactions"],
        users=files["users"],
        items=files["items"],
        feature_store=str(tmp / "feature_store"),
        report_dir=tmp / "reports",
        backtest_cuts=backtest_cuts,
        engine=engine,
    )
    run = train(config)
    runtime = Runtime.from_store(run.ranker_tag)
    users = [str(u) for u in runtime.candidates.user_ids[:: max(1, len(runtime.candidates.user_ids) // 2000)]]
    for user in users[:50]:
        runtime.pipeline.recommend([Query(user, 10)])
    latencies = []
    for user in users:
        begin = time.perf_counter()
        runtime.pipeline.recommend([Query(user, 10)])
        latencies.append((time.perf_counter() - begin) * 1000)
    result = {
        "size": name,
        **{key: size[key] for key in ("users", "items", "interactions")},
        "generate_seconds": round(generate_s, 1),
        "generate_peak_mb": round(generate_peak),
        "generator": "in blocks" if size.get("in_blocks") else "in memory",
        "step_seconds": run.timings,
        "peak_mb_after_step": run.peak_mb,
        "train_seconds": round(sum(run.timings.values()), 1),
        "peak_mb": max(run.peak_mb.values()),
        "engine": engine or "this process",
        "backtest_cuts": backtest_cuts,
        # The per-user split's (the backtest is off by default here): each user's last 20% held out.
        "ndcg@10": {k: round(v["ndcg@10"], 4) for k, v in run.evaluation["per_user_split"]["models"].items()},
        "request_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "request_p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }
    (tmp / "result.json").write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--sizes", default="1m,20m")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    cli.add_argument("--backtest-cuts", type=int, default=0, help="rolling backtest cuts (default: none)")
    cli.add_argument("--engine", help="python -m train's --engine: local, local:N or a scheduler's address")
    cli.add_argument("--child", help=argparse.SUPPRESS)
    cli.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    if args.child:
        child(args.child, args.tmp, args.backtest_cuts, args.engine)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "training_scale.json"
    # Sizes run separately accumulate in one file (the 20M run alone takes a while).
    results = {row["size"]: row for row in json.loads(path.read_text())} if path.exists() else {}
    for name in args.sizes.split(","):
        results[name] = run_size(name, args.backtest_cuts, args.engine)
    ordered = [results[name] for name in SIZES if name in results]
    path.write_text(json.dumps(ordered, indent=2))
    plot([row for row in ordered if "error" not in row], args.out / "training_scale.png")
    for row in ordered:
        print(json.dumps(row))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    sizes = [row["interactions"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    steps = list(rows[-1]["step_seconds"])
    bottom = [0.0] * len(rows)
    for step in steps:
        values = [row["step_seconds"].get(step, 0) for row in rows]
        left.bar([row["size"] for row in rows], values, bottom=bottom, label=step)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_ylabel("seconds")
    left.set_title("training wall time by step (2 cores)")
    left.legend(fontsize=6)
    right.plot(sizes, [row["peak_mb"] / 1024 for row in rows], marker="o")
    right.set_xscale("log")
    right.set_xlabel("interactions")
    right.set_ylabel("peak resident memory (GiB)")
    right.set_title("training peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    # The kernels python -m train runs (train/kernels.py), inherited by each size's child: without them the
    # synthetic NDCG moved with the CPU (0.6992 on one machine kind, 0.6997 on another at 100k).
    restart_with_pinned_kernels()
    sys.exit(main())
