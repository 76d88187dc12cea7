"""The environment of a child process this project starts (the start-up check, a worker's shadow scorer)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment with this project first on ``PYTHONPATH``, plus ``extra``: the child imports the
    code this process runs, whatever directory it starts in."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}" if path else PROJECT_ROOT, **extra}
