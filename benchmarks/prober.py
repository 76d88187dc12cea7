"""Probe URLs as the kubelet does, from a process of its own: ``GET`` on a new connection every 50 ms.

A prober inside the load generator's event loop measures that loop's delays
too (at 200 connections, hundreds of milliseconds); the kubelet is another
process, so this is one. Prints ``{url: [milliseconds, ...]}`` as JSON when
the time is up; a probe that fails or takes over 10 s counts as 10,000 ms.

    python -m benchmarks.prober --seconds 15 http://127.0.0.1:3000/livez http://127.0.0.1:3001/livez
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from urllib.parse import urlsplit

TIMEOUT_MS = 10_000.0


def probe_once(url: str) -> float:
    """Milliseconds for one ``GET`` on a fresh connection (``TIMEOUT_MS`` if it fails)."""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_MS / 1000)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return TIMEOUT_MS
    except OSError:
        return TIMEOUT_MS
    finally:
        conn.close()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between probes of one URL")
    args = parser.parse_args(argv)
    latencies: dict[str, list[float]] = {url: [] for url in args.urls}
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        for url in args.urls:
            latencies[url].append(round(probe_once(url), 3))
        time.sleep(args.every)
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
