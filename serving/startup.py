"""The start-up check: load what would be served once, and refuse clearly if it does not fit.

``service.py`` runs it (``python -m serving.startup``, in a child process:
:func:`check_in_child`) from the process ``bentoml serve`` starts first;
``python -m serving.startup`` alone says what would be served. BentoML has no
hook that runs once in that process before the workers start: a failure in a
worker's ``__init__`` only restarts the worker, in a loop, while a failure at
import makes ``bentoml serve`` exit with the message.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404
import sys
from pathlib import Path

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer  # private: serving/internals.py

from serving.children import child_environment
from serving.events import EventLogUnusable, check_writable
from serving.experiments import experiments_from
from serving.runtime import IncompatibleModels, Runtime
from serving.settings import ServiceSettings, SettingsError, get_settings


def in_worker() -> bool:
    """True inside a worker that `bentoml serve` spawned (it sets the worker index before importing us)."""
    return bentoml.server_context.worker_index is not None


METRICS_DIR_PREFIX = "server-"
MODEL_STORE_ENV = "RECSYS_CHECK_MODEL_STORE"  # the model store the server process reads, for its child check


def own_metrics_dir() -> Path:
    """Give this server a Prometheus multiprocess directory of its own: ``<BentoML's>/server-<pid>``.

    `bentoml serve` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so a second server
    with the same ``BENTOML_HOME`` (the split topology's three, a test beside a running server) deleted
    the first one's metric files and its ``/metrics`` lost every count. Must run in the server process
    before ``serve_http`` (service modules are imported first); directories of servers no longer running
    are removed. Overrides a BentoML container value (held by the exact pin, BentoML 1.4.40).
    """
    shared = Path(BentoMLContainer.prometheus_multiproc_dir.get())
    if shared.exists() and not shared.is_dir():
        shared.unlink()  # BentoML's own start would have replaced it too
    shared.mkdir(parents=True, exist_ok=True)
    for old in shared.glob(f"{METRICS_DIR_PREFIX}*"):
        if old.is_dir() and not _running(old.name.removeprefix(METRICS_DIR_PREFIX)):
            shutil.rmtree(old, ignore_errors=True)
    own = shared / f"{METRICS_DIR_PREFIX}{os.getpid()}"
    BentoMLContainer.prometheus_multiproc_dir.set(str(own))  # serve_http empties and uses it
    return own


def _running(pid: str) -> bool:
    """Whether a process with this id exists here (a name that is not a number counts as running: kept)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check(settings: ServiceSettings) -> Runtime:
    """Build the runtime the settings describe, load the experiment's arms, check the event log can be written.

    :class:`IncompatibleModels` or :class:`EventLogUnusable` says why the server must not start.
    """
    if settings.event_log:
        check_writable(settings.event_log)
    runtime = Runtime.from_settings(settings)
    experiments_from(settings, runtime, refresh=False)  # IncompatibleModels when its file cannot be served
    return runtime


def check_in_child() -> None:
    """Run :func:`check` in a child process (``python -m serving.startup``); exit with its message if it refuses.

    Run here, the models and the feature snapshot it loads stayed in the supervising ``bentoml serve``
    process for its whole life, which serves nothing: 171 MB private of its 280 MB RSS on MovieLens-100K,
    100 MB of them imports; deleting them and collecting gave back 6 MB. The child inherits the
    environment, so it checks exactly what the workers will load.
    """
    # Served from a Bento, BentoML points this process at the Bento's own model store: the child must look there.
    env = child_environment(**{MODEL_STORE_ENV: str(BentoMLContainer.model_store.get()._path)})
    # A fixed command, this interpreter, no shell, no user input.
    child = subprocess.run(  # nosec B603
        [sys.executable, "-m", "serving.startup"], capture_output=True, text=True, check=False, env=env
    )
    if child.returncode == 0:
        return
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if not errors:  # not a refusal: a crash, whose traceback must not be lost
        sys.stderr.write(child.stderr)
    reason = errors[-1] if errors else (lines or ["the start-up check failed"])[-1]
    raise SystemExit(f"recsys refuses to start: {reason}")


def main() -> int:
    """Print what would be served, or the reason it cannot be (exit 2)."""
    if os.environ.get(MODEL_STORE_ENV):
        from bentoml._internal.models.model import ModelStore  # private: serving/internals.py

        BentoMLContainer.model_store.set(ModelStore(os.environ[MODEL_STORE_ENV]))
    try:
        info = check(get_settings()).info()
    except (SettingsError, IncompatibleModels, EventLogUnusable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: would serve {info.model.ranker} + {info.model.candidates}, features {info.feature_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
