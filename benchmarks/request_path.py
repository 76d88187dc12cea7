"""The request path under load: micro-batching against no batching, probes while saturated, overload shedding.

All in one run, one worker (2-core machine; the load generator shares it):

1. the in-process pipeline limit (CPU per single-user request, no HTTP);
2. BentoML as served (micro-batched): 200 requests/s open loop, then 1/8/32/64
   connections closed loop, with ``/livez`` probed every 50 ms throughout and the
   batch sizes read from ``/metrics``;
3. the same service with every request handed to the pipeline thread
   (``RECSYS_INLINE_UNITS=0``: none answered on the event loop, even alone),
   with batching off (``RECSYS_MAX_BATCH_QUERIES=1``: one query per
   pipeline call), and with the event log on (``logged``: every answer's
   impressions written, in a temporary folder), same loads;
4. the FastAPI reference (same pipeline, unbatched, on the event loop), same loads;
5. overload: 200 connections sending 20-user batch requests for 20 s against the
   batched service: answers by status, ``/livez`` p99 and worker memory.

Uses the models in the BentoML store (train first: ``python -m train``). Traffic
goes to 127.0.0.1 only; every phase is bounded in time.

    python -m benchmarks.request_path --out docs/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from benchmarks.loadgen import fixed_concurrency, fixed_rate, hey, markdown, process_tree_rss_mb, recommend_bodies
from benchmarks.servers import free_port
from benchmarks.serving import BIN, fastapi_reference, in_process_limit, server
from serving.runtime import Runtime
from serving.settings import get_settings

BUCKET = re.compile(r'recsys_batch_queries_bucket\{le="([^"]+)"\} ([0-9.e+]+)')


def probe_urls(url: str, health_port: int | None) -> dict[str, str]:
    """What the prober asks: ``/livez`` on the service port, and on the probe port when there is one."""
    urls = {"livez": f"{url}/livez"}
    if health_port:
        urls["probe_port_livez"] = f"http://127.0.0.1:{health_port}/livez"
    return urls


async def loaded(
    url: str, path: str, bodies: list[dict], concurrency: int, seconds: float, probes: dict[str, str]
) -> tuple[dict, dict]:
    """Closed-loop load, probed from another process: the load's summary and the probes' percentiles."""
    prober = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.prober", "--seconds", str(seconds), *probes.values(),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    result = await fixed_concurrency(f"{url}{path}", bodies, concurrency, seconds)
    latencies = json.loads((await prober.communicate())[0])
    percentiles = {}
    for name, probe_url in probes.items():
        ms = latencies[probe_url]
        percentiles |= {
            f"{name}_p50_ms": round(float(np.percentile(ms, 50)), 2),
            f"{name}_p99_ms": round(float(np.percentile(ms, 99)), 2),
            f"{name}_max_ms": round(float(max(ms)), 2),
        }
    return result.summary() | {"statuses": result.errors}, percentiles


def batch_histogram(url: str) -> dict[str, float]:
    """Cumulative counts of ``recsys_batch_queries`` per bucket (empty for servers without batching)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {le: float(count) for le, count in BUCKET.findall(text)}


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Pipeline calls per batch-size bucket between two readings (non-cumulative)."""
    out, previous = {}, 0.0
    for le in after:
        cumulative = after[le] - before.get(le, 0.0)
        out[f"<={le}"] = int(cumulative - previous)
        previous = cumulative
    return {k: v for k, v in out.items() if v}


def phase(
    name: str,
    url: str,
    pid: int,
    bodies: list[dict],
    levels: list[int],
    seconds: float,
    rate: float,
    probes: dict,
    hey_levels: list[int],
) -> dict:
    """Open loop at ``rate``, then each closed-loop level with probes, then ``hey`` on one user; report rows."""
    fixed = asyncio.run(fixed_rate(f"{url}/recommend", bodies, rate, min(seconds * 2, 30)))
    rows = [{"server": name, **fixed.summary()}]
    print(markdown(rows), flush=True)
    known = next(body for body in bodies if not body["user_id"].startswith("new-"))  # recommend_bodies' strangers
    for level in hey_levels:
        # One known user, every request alike: what the issue's hey figures measured.
        row = {"server": name, **hey(f"{url}/recommend", known, level, seconds)}
        rows.append(row)
        print(markdown([rows[0], row]).splitlines()[-1], flush=True)  # in the header's columns
    for level in levels:
        before = batch_histogram(url)
        summary, probed = asyncio.run(loaded(url, "/recommend", bodies, level, seconds, probes))
        summary.pop("statuses")
        row = {"server": name, **summary, **probed, "rss_mb": process_tree_rss_mb(pid)}
        row["batch_sizes"] = batch_sizes(before, batch_histogram(url)) or None
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    return {"rows": rows}


def overload(url: str, pid: int, users: list[str], seconds: float, connections: int, probes: dict) -> dict:
    """Many connections of 20-user batch requests: what the clients get and how the probes and memory fare."""
    bodies = [{"requests": [{"user_id": u, "k": 10} for u in users[i : i + 20]]} for i in range(0, 900, 20)]
    rss_start = process_tree_rss_mb(pid)
    summary, probed = asyncio.run(loaded(url, "/recommend_batch", bodies, connections, seconds, probes))
    return {**summary, **probed, "rss_mb_start": rss_start, "rss_mb_end": process_tree_rss_mb(pid)}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--concurrency", default="1,8,32,64")
    cli.add_argument("--seconds", type=float, default=15, help="per level")
    cli.add_argument("--rate", type=float, default=200, help="open-loop requests/s")
    cli.add_argument("--overload-connections", type=int, default=200)
    cli.add_argument("--overload-seconds", type=float, default=20)
    cli.add_argument("--out", type=Path, default=Path("var/bench"))
    cli.add_argument("--hey", default="", help="connection levels to run hey at too, on one user (e.g. 1,32)")
    cli.add_argument(
        "--servers",
        default="batched,handed-off,unbatched,fastapi",
        help="which of batched, handed-off (no request answered on the event loop), unbatched, logged (batched, "
        "the event log on), fastapi to measure",
    )
    args = cli.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    hey_levels = [int(c) for c in args.hey.split(",") if c]
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": "1"})
    report: dict = {"machine": f"{os.cpu_count()} cores", "workers": 1, "limit": in_process_limit()}
    print(markdown([report["limit"]]), flush=True)
    users = [str(u) for u in Runtime.from_settings(get_settings()).candidates.user_ids]
    bodies = recommend_bodies(users, 5000, seed=2)
    base_env = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_EVENT_LOG": ""}
    bento = [str(BIN / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1"]
    servers = set(args.servers.split(","))
    events = tempfile.TemporaryDirectory(prefix="recsys-bench-events-")  # the logged server's event log, then gone
    services = (
        ("bentoml batched", {}),
        ("bentoml handed-off", {"RECSYS_INLINE_UNITS": "0"}),  # every request to the pipeline thread, as before
        ("bentoml unbatched", {"RECSYS_MAX_BATCH_QUERIES": "1"}),
        ("bentoml logged", {"RECSYS_EVENT_LOG": events.name}),  # as batched, every answer's impressions logged
    )
    for name, extra in [(n, e) for n, e in services if n.split()[1] in servers]:
        port, health_port = free_port(), free_port()
        log = args.out / f"{name.replace(' ', '_')}.log"
        env = base_env | extra | {"RECSYS_HEALTH_PORT": str(health_port)}
        with server([*bento, "--port", str(port)], port, env, log) as (url, pid):
            print(f"\n{name}", flush=True)
            probes = probe_urls(url, health_port)
            report[name] = phase(name, url, pid, bodies, levels, args.seconds, args.rate, probes, hey_levels)
            if not extra:
                print(f"\n{name}: overload", flush=True)
                report["overload"] = overload(url, pid, users, args.overload_seconds, args.overload_connections, probes)
                print(json.dumps(report["overload"]), flush=True)
    events.cleanup()
    if "fastapi" in servers:
        port = free_port()
        uvicorn = fastapi_reference(port)
        with server(uvicorn, port, log=args.out / "fastapi.log") as (url, pid):
            print("\nfastapi (unbatched reference)", flush=True)
            probes = probe_urls(url, None)
            report["fastapi"] = phase("fastapi", url, pid, bodies, levels, args.seconds, args.rate, probes, hey_levels)
    rows = [
        row
        for name in ("bentoml batched", "bentoml handed-off", "bentoml unbatched", "bentoml logged", "fastapi")
        for row in report.get(name, {}).get("rows", [])
    ]
    print("\n" + markdown([{k: v for k, v in r.items() if k != "batch_sizes"} for r in rows]))
    (args.out / "request_path.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'request_path.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
