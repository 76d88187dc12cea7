"""Serving benchmark: our BentoML service against its limit and its alternatives.

All in one run, so the noise of a shared machine hits every row alike:

1. the limit: the same pipeline called in-process, no HTTP (CPU per request);
2. `bentoml serve service:Recommender` at a fixed rate (latency target) and at
   fixed concurrencies (saturation), with server memory before and after;
3. the same pipeline behind plain FastAPI on uvicorn, same concurrencies;
4. the stages as two BentoML services (``benchmarks/composed_service.py``).

Uses the models in the BentoML store (train first: ``python -m train``).
Client and servers share this machine's cores; traffic goes to 127.0.0.1 only.

    python -m benchmarks.serving --out var/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from benchmarks.loadgen import fixed_concurrency, fixed_rate, markdown, process_tree_rss_mb, recommend_bodies
from benchmarks.servers import free_port, running
from serving.runtime import Runtime
from serving.settings import get_settings
from stages.pipeline import Query

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _answers(url: str) -> bool:
    try:
        return httpx.post(f"{url}/recommend", json={"user_id": "warmup"}, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None):
    """Run a server in its own process group until the block ends; yields its URL and pid."""
    url = f"http://127.0.0.1:{port}"
    with running(command, lambda: _answers(url), REPO, env, log, timeout=90) as process:
        yield url, process.pid


def fastapi_reference(port: int, workers: int = 1) -> list[str]:
    """The command that serves the FastAPI reference (benchmarks/fastapi_app.py) on ``port``."""
    return [
        str(BIN / "uvicorn"), "benchmarks.fastapi_app:app", "--port", str(port), "--host", "127.0.0.1",
        "--no-access-log", "--loop", "uvloop", "--http", "httptools", "--workers", str(workers),
    ]  # fmt: skip


def in_process_limit(n: int = 2000) -> dict:
    """CPU time per single-user request with no HTTP at all."""
    runtime = Runtime.from_settings(get_settings())
    users = [str(u) for u in runtime.candidates.user_ids]
    bodies = recommend_bodies(users, n, seed=1)
    queries = [Query(b["user_id"], b["k"]) for b in bodies]
    for query in queries[:100]:
        runtime.pipeline.recommend([query])
    wall = []
    cpu_start = time.process_time()
    for query in queries:
        start = time.perf_counter()
        runtime.pipeline.recommend([query])
        wall.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / n
    return {
        "label": "in-process pipeline (no HTTP)",
        "p50_ms": round(float(np.percentile(wall, 50)), 3),
        "p99_ms": round(float(np.percentile(wall, 99)), 3),
        "cpu_ms_per_request": round(cpu_ms, 3),
        "rps_per_core": round(1000 / cpu_ms, 1),
    }


def run_load(url: str, pid: int, bodies: list[dict], concurrencies: list[int], seconds: float, name: str) -> list:
    rows = []
    for concurrency in concurrencies:
        result = asyncio.run(fixed_concurrency(f"{url}/recommend", bodies, concurrency, seconds))
        result.rss_mb_end = process_tree_rss_mb(pid)
        rows.append({"server": name, **result.summary()})
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--concurrency", default="1,8,32,64", help="comma-separated connection counts")
    cli.add_argument("--seconds", type=float, default=15, help="per concurrency level")
    cli.add_argument("--rate", type=float, default=200, help="fixed arrival rate for the latency run")
    cli.add_argument("--rate-seconds", type=float, default=60)
    cli.add_argument("--workers", type=int, default=1, help="BentoML and uvicorn workers")
    cli.add_argument("--skip-fastapi", action="store_true")
    cli.add_argument("--skip-composed", action="store_true", help="skip the two-service topology")
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    args = cli.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": str(args.workers)}
    os.environ.update(env)

    limit = in_process_limit()
    print(markdown([limit]), flush=True)
    runtime = Runtime.from_settings(get_settings())
    bodies = recommend_bodies([str(u) for u in runtime.candidates.user_ids], 5000, seed=2)
    del runtime

    report: dict = {"limit": limit, "machine": f"{os.cpu_count()} cores", "workers": args.workers}
    port = free_port()
    bento = [str(BIN / "bentoml"), "serve", "service:Recommender", "--port", str(port), "--host", "127.0.0.1"]
    with server(bento, port, {"RECSYS_REFRESH_SECONDS": "0"}, args.out / "bentoml.log") as (url, pid):
        print(f"\nBentoML at {args.rate:.0f} req/s for {args.rate_seconds:.0f}s", flush=True)
        rss_start = process_tree_rss_mb(pid)
        fixed = asyncio.run(fixed_rate(f"{url}/recommend", bodies, args.rate, args.rate_seconds))
        fixed.rss_mb_start, fixed.rss_mb_end = rss_start, process_tree_rss_mb(pid)
        report["fixed_rate"] = fixed.summary()
        print(markdown([report["fixed_rate"]]), flush=True)
        print("\nBentoML, closed loop", flush=True)
        report["bentoml"] = run_load(url, pid, bodies, concurrencies, args.seconds, "bentoml")

    if not args.skip_fastapi:
        port = free_port()
        uvicorn = fastapi_reference(port, args.workers)
        with server(uvicorn, port, log=args.out / "fastapi.log") as (url, pid):
            print("\nFastAPI + uvicorn, closed loop", flush=True)
            report["fastapi"] = run_load(url, pid, bodies, concurrencies, args.seconds, "fastapi")
        report["ratio_bentoml_to_fastapi_rps"] = {
            str(c): round(b["rps"] / f["rps"], 2)
            for c, b, f in zip(concurrencies, report["bentoml"], report["fastapi"], strict=True)
        }
    if not args.skip_composed:
        port = free_port()
        composed = [
            str(BIN / "bentoml"),
            "serve",
            "benchmarks.composed_service:ComposedRecommender",
            "--port",
            str(port),
        ]
        composed += ["--host", "127.0.0.1"]
        with server(composed, port, {"RECSYS_REFRESH_SECONDS": "0"}, args.out / "composed.log") as (url, pid):
            print("\nBentoML, stages as two services (bentoml.depends), closed loop", flush=True)
            report["composed"] = run_load(url, pid, bodies, concurrencies, args.seconds, "bentoml-composed")
    best = max(row["rps"] for row in report["bentoml"])
    report["ratio_bentoml_to_limit_rps"] = round(best / (limit["rps_per_core"] * args.workers), 2)

    rows = report["bentoml"] + report.get("fastapi", []) + report.get("composed", [])
    print("\n" + markdown(rows))
    print(f"\nratios: {json.dumps({k: v for k, v in report.items() if k.startswith('ratio')})}")
    (args.out / "serving.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "serving_latency.png")
    print(f"wrote {args.out / 'serving.json'} and {args.out / 'serving_latency.png'}")
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("bentoml", "fastapi", "composed"):
        rows = report.get(name)
        if not rows:
            continue
        left.plot([r["rps"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=f"{name} p99")
        left.plot(
            [r["rps"] for r in rows], [r["p50_ms"] for r in rows], marker=".", linestyle="--", label=f"{name} p50"
        )
        right.plot([r["label"].split()[0] for r in rows], [r["rps"] for r in rows], marker="o", label=name)
    left.set_xlabel("requests/s")
    left.set_ylabel("latency (ms)")
    left.set_title("/recommend latency against load")
    left.legend()
    right.set_xlabel("connections")
    right.set_ylabel("requests/s")
    right.set_title("throughput")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
