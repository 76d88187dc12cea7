"""The start-up check: load what would be served once, and refuse clearly if it does not fit.

``make serve`` runs it (``python -m serving.startup``) before starting the
server, and ``service.py`` calls :func:`check` in the process ``bentoml
serve`` starts first. BentoML has no hook that runs once in that process
before the workers start: a failure in a worker's ``__init__`` only restarts
the worker, in a loop, while a failure at import makes ``bentoml serve`` exit
with the message.
"""

from __future__ import annotations

import sys

import bentoml

from serving.events import EventLogUnusable, check_writable
from serving.runtime import IncompatibleModels, Runtime
from serving.settings import ServiceSettings, SettingsError, get_settings


def in_worker() -> bool:
    """True inside a worker that `bentoml serve` spawned (it sets the worker index before importing us)."""
    return bentoml.server_context.worker_index is not None


def check(settings: ServiceSettings) -> Runtime:
    """Build the runtime the settings describe and check the event log can be written.

    :class:`IncompatibleModels` or :class:`EventLogUnusable` says why the server must not start.
    """
    if settings.event_log:
        check_writable(settings.event_log)
    return Runtime.from_settings(settings)


def main() -> int:
    """Print what would be served, or the reason it cannot be (exit 2)."""
    try:
        info = check(get_settings()).info()
    except (SettingsError, IncompatibleModels, EventLogUnusable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: would serve {info.model.ranker} + {info.model.candidates}, features {info.feature_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
