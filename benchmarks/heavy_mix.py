"""The heaviest legal request mix against a running server: does every answer come within the 10 s bound?

Each client sends `/recommend_batch` bodies of 100 requests, each with k=100,
100 `recent_items` and `explain`, back to back, ignoring `Retry-After` (as a
careless client does). Prints the count and latency quantiles per outcome and
the peak RSS of the server's worker processes.

    bentoml serve service:Recommender --port 3111 &   # with RECSYS_WORKERS=1
    python -m benchmarks.heavy_mix --url http://127.0.0.1:3111 --clients 50 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

N_ITEMS = 1682  # MovieLens-100K's item ids 1..1682; user ids 1..943
N_USERS = 943


def heavy_body(rng: random.Random, explain: bool) -> str:
    items = [str(i) for i in range(1, N_ITEMS + 1)]
    return json.dumps(
        {
            "requests": [
                {
                    "user_id": str(rng.randint(1, N_USERS)),
                    "k": 100,
                    "explain": explain,
                    "recent_items": [{"item_id": i} for i in rng.sample(items, 100)],
                }
                for _ in range(100)
            ]
        }
    )


def worker_rss_mb() -> list[int]:
    """Resident memory of every BentoML worker process on this machine, in MB."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"_bentoml_impl.worker" not in (proc / "cmdline").read_bytes():
                continue
            out.append(int((proc / "status").read_text().split("VmRSS:")[1].split()[0]) // 1024)
        except (OSError, IndexError):
            continue
    return out


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--url", default="http://127.0.0.1:3111")
    cli.add_argument("--clients", type=int, default=50)
    cli.add_argument("--seconds", type=float, default=30)
    cli.add_argument("--no-explain", action="store_true")
    args = cli.parse_args()
    rng = random.Random(0)  # nosec B311
    bodies = [heavy_body(rng, not args.no_explain) for _ in range(20)]
    print(f"body bytes: {len(bodies[0])}")
    outcomes: Counter[str] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)
    stop = time.monotonic() + args.seconds

    def client(seed: int) -> None:
        pick = random.Random(seed)  # nosec B311
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                start = time.monotonic()
                try:
                    response = http.post(
                        f"{args.url}/recommend_batch",
                        content=pick.choice(bodies),
                        headers={"content-type": "application/json"},
                    )
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                outcomes[outcome] += 1
                latencies[outcome].append(time.monotonic() - start)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
    for thread in threads:
        thread.start()
    peak = 0
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.5)
        peak = max([peak, *worker_rss_mb()])
    print(f"outcomes: {dict(outcomes)}; peak worker RSS {peak} MB")
    for outcome, seconds in sorted(latencies.items()):
        seconds.sort()
        p50, p99 = seconds[len(seconds) // 2], seconds[int(len(seconds) * 0.99)]
        print(f"  {outcome}: n {len(seconds)}, p50 {p50:.2f} s, p99 {p99:.2f} s, max {seconds[-1]:.2f} s")


if __name__ == "__main__":
    main()
