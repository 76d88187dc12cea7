"""Where a lone ``/recommend`` spends its CPU, step by step: the per-step table of issue 27.

``benchmarks.request_cost`` says how much CPU a request costs each thread;
this says which step spends it. One keep-alive connection sends lone
requests back to back while py-spy samples every thread of the worker (500
times a second, without pausing it). Each sample is charged to the deepest
frame that names a step (:data:`STEPS`), and each step's share of the samples
times the worker's CPU per request (``/proc``) gives its milliseconds. Three
servers, one after another, same models and users:

- BentoML with the lone request handed to the pipeline thread
  (``RECSYS_INLINE_UNITS=0``, how it was served before the inline path);
- BentoML as served (a lone request answered on the event loop);
- the FastAPI reference (``benchmarks/fastapi_app.py``).

    python -m benchmarks.request_steps --seconds 10

Needs py-spy (in the dev extra) and the right to trace the worker (root, or
``CAP_SYS_PTRACE``). Uses the models in the BentoML store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess  # nosec B404
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.loadgen import markdown
from benchmarks.request_cost import TICK_MS, in_process, send_for, thread_ticks, worker_pid
from benchmarks.servers import free_port
from benchmarks.serving import BIN, fastapi_reference, server
from serving.api_models import RecommendRequest
from serving.runtime import Runtime
from serving.settings import get_settings

SAMPLES_PER_SECOND = 500


def _in(*parts: str) -> Callable[[str], bool]:
    return lambda frame: any(part in frame for part in parts)


# Checked from the innermost frame outwards; the first step that names a frame gets the sample. Order matters
# only within one frame: a frame in serving/responses.py's to_responses is response building, not pipeline.
STEPS: list[tuple[str, Callable[[str], bool]]] = [
    ("event log (impressions)", _in("serving/events.py", "record_impressions (")),
    ("response objects (to_responses)", _in("to_responses (serving/responses.py")),
    ("pipeline (answer)", _in("answer (serving/responses.py")),
    ("validation (parse, check_requests)", _in("from_http_request (", "check_requests (", "model_validate_json (")),
    ("serialisation (to JSON)", _in("to_http_response (", "model_dump_json (", "jsonable_encoder (")),
    ("hand-off and batching", _in("serving/batcher.py", "recommend_or_shed (")),
    ("edge (admission, body, envelope)", _in("serving/edge.py")),
    ("socket writes (lingering transport)", _in("serving/connection.py")),
    (
        "framework (BentoML or FastAPI, Starlette)",
        _in(
            "bentoml/",
            "_bentoml_impl/",
            "_bentoml_sdk/",
            "starlette/",
            "fastapi/",
            "opentelemetry",
            "prometheus_client",
            "simple_di",
            "service.py",
            "fastapi_app.py",
        ),
    ),
    ("uvicorn and asyncio", _in("uvicorn/", "asyncio/", "uvloop")),
]
OTHER = "other"


def step_of(frames: list[str]) -> str:
    """The step of one sample: the innermost frame a step names."""
    for frame in reversed(frames):
        for name, names in STEPS:
            if names(frame):
                return name
    return OTHER


def shares(raw: Path) -> dict[str, float]:
    """Each step's share of py-spy's samples (its ``raw`` format: ``frame;frame;... count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        counts[step_of(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name in [*(n for n, _ in STEPS), OTHER]}


def record_command(spy: str, pid: int, seconds: float, raw: Path) -> list[str]:
    """py-spy sampling every thread of ``pid`` for ``seconds``, without pausing it, into ``raw``."""
    return [spy, "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1)), "--rate",
            str(SAMPLES_PER_SECOND), "--format", "raw", "--output", str(raw), "--nonblocking", "--threads"]  # fmt: skip


def profile(port: int, pid: int, bodies: list[dict], seconds: float, spy: str) -> dict[str, float]:
    """Milliseconds of CPU per lone request, per step, while py-spy samples the worker."""
    send_for(port, "POST", "/recommend", bodies, 1.0)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        command = record_command(spy, pid, seconds, raw)
        before = thread_ticks(pid)
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # nosec B603
        sent, _ = send_for(port, "POST", "/recommend", bodies, seconds)
        _, error = recorder.communicate(timeout=60)
        after = thread_ticks(pid)
        if recorder.returncode != 0 or not raw.exists():
            raise SystemExit(f"error: py-spy could not sample the worker: {error.strip()[-500:]}")
        split = shares(raw)
    cpu_ms = sum(after[tid] - before.get(tid, 0) for tid in after) * TICK_MS / sent
    return {"cpu_ms": cpu_ms, "requests": sent, **{name: share * cpu_ms for name, share in split.items()}}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--seconds", type=float, default=10, help="per server")
    cli.add_argument("--out", type=Path, help="also write the table here (JSON)")
    args = cli.parse_args(argv)
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        print("error: py-spy is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    os.environ.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RECSYS_WORKERS": "1"})
    runtime = Runtime.from_settings(get_settings())
    users = np.random.default_rng(0).permutation(np.asarray(runtime.candidates.user_ids, dtype=str))
    bodies = [{"user_id": str(user), "k": 10} for user in users]
    served = {"RECSYS_REFRESH_SECONDS": "0", "RECSYS_EVENT_LOG": ""}
    columns: dict[str, dict[str, float]] = {}
    for label, inline_units in (("BentoML, handed off", "0"), ("BentoML, as served", None)):
        env = {**served, "RECSYS_HEALTH_PORT": str(free_port())}
        if inline_units is not None:
            env["RECSYS_INLINE_UNITS"] = inline_units
        port = free_port()
        bento = [str(BIN / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1", "--port", str(port)]
        with server(bento, port, env) as (_, pid):
            columns[label] = profile(port, worker_pid(pid), bodies, args.seconds, spy)
    port = free_port()
    uvicorn = fastapi_reference(port)
    with server(uvicorn, port) as (_, pid):
        columns["FastAPI reference"] = profile(port, worker_pid(pid), bodies, args.seconds, spy)
    lone = [RecommendRequest.model_validate(body) for body in bodies[:1000]]
    reference = in_process(runtime, {"lone": lone})["lone"]
    rows = [
        {"step": name, **{label: round(column[name], 3) for label, column in columns.items()}}
        for name in [*(n for n, _ in STEPS), OTHER]
    ]
    rows.append({"step": "CPU ms per request", **{k: round(c["cpu_ms"], 3) for k, c in columns.items()}})
    rows.append({"step": "/ in-process answer()", **{k: round(c["cpu_ms"] / reference, 2) for k, c in columns.items()}})
    print(f"in-process answer(), one lone request a call: {reference:.3f} ms of CPU")
    print(markdown(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"in_process_answer_ms": reference, "columns": columns}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
