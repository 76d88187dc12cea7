"""The image `bentoml containerize` builds from our Bento answers over HTTP.

Builds the Bento, the local python:3.11-slim stand-in (scripts/build_base_image.sh),
the image (buildah backend), runs it with nothing mounted as BentoML's non-root
user, queries it, then stops it by process id and removes what it created.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from serving.runtime import PACKED_SOURCE, Runtime
from stages.pipeline import Query
from tests.support import FIGURES, REPO, cmdline, free_port, status_field

pytestmark = [pytest.mark.slow, pytest.mark.container]
IN_IMAGE = "/home/bentoml/bento"


def builder_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building and running images with buildah's chroot isolation needs root"
    if shutil.which("buildah") is None and shutil.which("apt-get") is None:
        return "no buildah and no apt-get to install it: no container builder on this machine"
    return None


def run(*command: str, timeout: float = 1800) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def image_processes() -> list[int]:
    """Host pids of the server started inside the image (chroot isolation shares the pid space)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        command = cmdline(int(entry.name))
        if root != "/" and command is not None and "bentoml" in command:
            pids.append(int(entry.name))
    return pids


def uid_of(pid: int) -> int:
    uids = status_field(pid, "Uid")  # real, effective, saved, filesystem
    assert uids is not None, f"no Uid line for {pid}"
    return int(uids.split()[0])


@pytest.fixture(scope="module")
def image(bento_tag):
    reason = builder_unavailable()
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    run("bash", str(REPO / "scripts" / "build_base_image.sh"))
    name = f"recsys-test:{bento_tag.split(':')[1]}"
    containerize = str(REPO / "scripts" / "containerize.sh")  # BentoML #5566, see the script
    run(containerize, "--backend", "buildah", "--opt", "isolation=chroot", bento_tag, "-t", name)
    size = run("buildah", "images", "--format", "{{.Size}}", f"localhost/{name}").strip()
    FIGURES.append(f"container image localhost/{name}: {size}, Bento to image in {time.monotonic() - start:.0f}s")
    yield f"localhost/{name}", size
    subprocess.run(["buildah", "rmi", "-f", f"localhost/{name}"], capture_output=True)


@pytest.fixture(scope="module")
def container(image):
    name, _ = image
    working = run("buildah", "from", name).strip()
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"recsys-container-{port}.log"
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", "bentoml", working, "--",
             f"{IN_IMAGE}/env/docker/entrypoint.sh", "bentoml", "serve", IN_IMAGE, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"container exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    FIGURES.append(f"container start to ready: {time.monotonic() - started:.1f}s (polled every 1 s)")
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready after 180s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield url
    finally:
        # `buildah run` with chroot isolation leaves the server as plain host
        # processes: stop them by pid, then the run itself. A worker may be gone
        # between listing and signalling (the server stops its workers itself).
        for pid in image_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(3)
        for pid in image_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        subprocess.run(["buildah", "rm", working], capture_output=True)


def test_image_serves_real_recommendations(container, image, movielens_run):
    run_result, _ = movielens_run
    offline = Runtime.from_store(run_result.ranker_tag).pipeline.recommend([Query("196", k=10)])[0]
    with httpx.Client(base_url=container, timeout=30) as http:
        body = http.post("/recommend", json={"user_id": "196", "k": 10}).json()
        assert body["status"] == "success" and body["strategy"] == "two_stage"
        assert [r["item_id"] for r in body["recommendations"]] == offline.item_ids
        info = http.post("/model_info", json={}).json()
        assert info["model"] == {"candidates": run_result.candidates_tag, "ranker": run_result.ranker_tag}
        assert info["feature_source"] == PACKED_SOURCE  # packed in the image, nothing mounted; no paths shown


def test_image_rejects_bad_input(container):
    with httpx.Client(base_url=container, timeout=30) as http:
        response = http.post("/recommend", json={"user_id": "196", "k": 0})
        assert response.status_code == 400 and response.json()["detail"][0]["loc"] == ["k"]
        response = http.post("/similar_items", json={"item_id": "no-such-item"})
        assert response.status_code == 404
        too_large = b"{" + b" " * (1024 * 1024) + b"}"  # over the 1 MiB default
        response = http.post("/recommend", content=too_large, headers={"content-type": "application/json"})
        assert response.status_code == 413


def test_image_runs_as_non_root(container):
    pids = image_processes()
    assert pids, "no server processes found"
    assert all(uid_of(pid) != 0 for pid in pids)
