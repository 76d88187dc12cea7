"""Servers under test and their processes: a free port, a server in its own process group, its process tree.

The one copy of these helpers: the benchmarks use them directly and the tests
through ``tests/support.py``. They live here, with the benchmarks, because a
benchmark is a tool run on its own (``python -m benchmarks.soak``) and must not
need the test tree, while tests may depend on the project's tools.
Linux only: the process tree is read from ``/proc``.
"""

from __future__ import annotations

import os
import random
import signal
import socket

# B404 (bandit): starts the servers under test, fixed argv
import subprocess  # nosec B404
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PROC = Path("/proc")


_HANDED_OUT: set[int] = set()
_PICK = random.Random(os.getpid() ^ time.time_ns())  # nosec B311
# pytest-xdist workers ("gw0", "gw1", ...) pick from disjoint residues, so two never hand out the same port.
_SHARE = (int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now, below the kernel's ephemeral range, never handed out twice
    (by this process, or by another pytest-xdist worker).

    A port the kernel picks (bind to 0) is an ephemeral one: before the server bound it, an outgoing
    connection could take it as its source port, and two calls before either server started could
    return the same one (a split-topology test failed once with EADDRINUSE).
    """
    low = _ephemeral_low()
    for _ in range(500):
        port = _PICK.randrange(10_000, low)
        if port in _HANDED_OUT or port % _SHARE[1] != _SHARE[0]:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port between 10000 and {low}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 when unreadable)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low if low > 11_000 else 32768


def parent_pid(pid: int) -> int | None:
    """The parent of a process, or None if it is gone.

    Read from ``/proc/<pid>/stat``: the field after the state, counted from the
    last ``)`` since the command name in parentheses may contain anything.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """Every descendant of ``root`` (children, grandchildren, ...), not ``root`` itself."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = parent_pid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> str | None:
    """A process's command line as one string, or None if it is gone."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def worker_pids(root: int) -> list[int]:
    """BentoML worker processes under a `bentoml serve` process."""
    return [pid for pid in process_tree(root) if "_bentoml_impl.worker" in (cmdline(pid) or "")]


def status_field(pid: int, name: str) -> str | None:
    """The value of one ``/proc/<pid>/status`` line (``VmRSS``, ``Uid``, ...), or None."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    prefix = f"{name}:"
    return next((line[len(prefix) :].strip() for line in lines if line.startswith(prefix)), None)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the whole process group (BentoML forks workers), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log is not None and log.exists() else "(no log kept)"


@contextmanager
def running(
    command: list[str],
    ready: Callable[[], bool],
    cwd: Path,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 90,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group until ``ready()`` holds; stop the group when the block ends.

    Raises RuntimeError (with the end of the log) if the process exits first
    or is not ready after ``timeout`` seconds.
    """
    with (log or Path(os.devnull)).open("w") as out:
        # B603 (bandit): argv built by the caller, no shell
        process = subprocess.Popen(  # nosec B603
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} not ready after {timeout}s:\n{_tail(log)}")
            time.sleep(0.3)
        yield process
    finally:
        stop(process)


@contextmanager
def recommender(env: dict[str, str], log: Path, cwd: Path, timeout: float = 120) -> Iterator[tuple[str, int]]:
    """``bentoml serve service:Recommender`` on a free port with ``env``, until the block ends: its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:Recommender", "--host", "127.0.0.1"]
    command += ["--port", str(port)]

    def ready() -> bool:
        try:
            # B310 (bandit): a fixed http URL on 127.0.0.1
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # nosec B310
                return response.status == 200
        except OSError:
            return False

    with running(command, ready, cwd, env, log, timeout) as process:
        yield url, process.pid
