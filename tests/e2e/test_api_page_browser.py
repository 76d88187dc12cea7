"""The page a user opens first (``/``), as a real browser shows it: this API's, loading nothing from elsewhere.

Headless Chromium from Debian's packages (installed when missing, as the
container test installs buildah) opens the page, runs its scripts and dumps the
rendered document; its network log lists every request the page made (those
it initiated; the browser's own update checks and lookups have no initiator).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.api_page import VERSION

pytestmark = pytest.mark.slow

QUIET_BROWSER = [
    "--headless",
    "--no-sandbox",  # the suite runs as root on CI
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--virtual-time-budget=20000",  # let Swagger UI fetch the spec and render before the dump
]


def chromium() -> str:
    """The browser's path, installing Debian's ``chromium`` when it is missing (about 15 s)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no chromium, and no root apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    for command in (["apt-get", "update", "-qq"], install):
        subprocess.run(command, env=env, capture_output=True, check=True, timeout=600)
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def page_requests(net_log: Path, origin: str) -> list[str]:
    """URLs a page of ``origin`` asked for, from a Chromium net log: the requests it initiated.

    The browser's own (update checks, account probes, autofill lookups) have no initiator, even those
    filed under the page's network isolation key.
    """
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job and event.get("params", {}).get("initiator") == origin
    ]


def test_page_requests_are_told_apart_from_the_browsers_own(tmp_path):
    """The filter above on a known log: what a page asked for, not Chromium's own lookups."""
    page = "http://127.0.0.1:8000"
    events = [
        (page + "/", "not an origin"),  # the page itself
        (page + "/app.js", page),
        ("https://example.com/x.png", page),
        ("https://content-autofill.googleapis.com/v1/pages/x", "not an origin"),
        ("https://update.googleapis.com/service/update2/json", "not an origin"),
    ]
    log = {
        "constants": {"logEventTypes": {"URL_REQUEST_START_JOB": 7}},
        "events": [{"type": 7, "params": {"url": url, "initiator": initiator}} for url, initiator in events]
        + [{"type": 7, "params": {"net_error": -105}}, {"type": 3}],
    }
    (tmp_path / "net.json").write_text(json.dumps(log))
    assert page_requests(tmp_path / "net.json", page) == [page + "/app.js", "https://example.com/x.png"]


def test_the_api_page_in_a_browser_names_this_api_and_stays_on_the_server(server, tmp_path):
    net_log = tmp_path / "net.json"
    profile = f"--user-data-dir={tmp_path / 'profile'}"  # a new empty profile: nothing from an earlier run
    command = [chromium(), *QUIET_BROWSER, profile, "--enable-logging=stderr", f"--log-net-log={net_log}", "--dump-dom"]
    browser = subprocess.run([*command, f"{server.url}/"], capture_output=True, text=True, timeout=120, check=True)
    shown = browser.stdout
    console = [line for line in browser.stderr.splitlines() if "CONSOLE" in line]
    requests = page_requests(net_log, server.url)
    # Swagger UI rendered the spec: the title, version and description are this API's, and so are the operations.
    assert "<title>recsys: recommendations over HTTP</title>" in shown
    title = f'<h2 class="title">recsys<span><small><pre class="version"> {VERSION} </pre>'
    assert title in shown and "A two-stage recommender" in shown, "\n".join(requests + console)
    assert "/recommend_batch" in shown and "/similar_items" in shown
    assert "BentoML" not in shown and ">None<" not in shown
    assert f"{server.url}/docs.json" in requests and f"{server.url}/static_content/swagger-ui-bundle.js" in requests
    elsewhere = [url for url in requests if not url.startswith(f"{server.url}/")]
    assert elsewhere == [], elsewhere
