"""Start a real `bentoml serve` in a subprocess and wait until it is ready."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole process group (BentoML forks workers), then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def serve(
    target: str,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    log: Path | None = None,
    timeout: float = 90,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
) -> Iterator[Server]:
    port = free_port()
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"recsys-serve-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(process, url, log)
    finally:
        stop(process)


def run_until_exit(target: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    """Start a server that is expected to refuse to start; return its exit code and output."""
    result = subprocess.run(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr
