"""Every call the README and the API guide show, run as written against a real server, so none goes stale.

The ``curl`` lines of README.md and docs/api.md and the README's Python
client example are taken from the files themselves (only ``localhost:3000``
becomes the test server's address), run in a shell and a fresh interpreter,
and must answer 200 with JSON; the example answer printed under the README's
first call must be the live one (items and scores).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


DOCUMENTS = ("README.md", "docs/api.md")


def readme_blocks(language: str, document: str = "README.md") -> list[str]:
    return [body for lang, body in FENCE.findall((REPO / document).read_text()) if lang == language]


def curl_commands(document: str = "README.md") -> list[str]:
    """Each ``curl`` of a document's shell blocks, continuation lines joined."""
    commands = []
    for block in readme_blocks("bash", document):
        for command in block.replace("\\\n", " ").splitlines():
            if command.lstrip().startswith("curl "):
                commands.append(command.strip())
    return commands


CALLS = [(document, command) for document in DOCUMENTS for command in curl_commands(document)]


def _call_id(document: str, command: str) -> str:
    return f"{document}:{command.split('localhost:3000')[1].split()[0]}"


def test_the_readme_shows_calls_to_every_public_endpoint():
    called = {re.search(r"localhost:3000(/\w+)", c).group(1) for c in curl_commands()}  # type: ignore[union-attr]
    assert called >= {"/recommend", "/recommend_batch", "/similar_items", "/feedback", "/model_info"}


@pytest.fixture(scope="module")
def request_id(client) -> str:
    """A real answer's request id, for the README's ``/feedback`` example."""
    return client.post("/recommend", json={"user_id": "196", "k": 3}).json()["request_id"]


@pytest.mark.parametrize(("document", "command"), CALLS, ids=[_call_id(*call) for call in CALLS])
def test_every_curl_in_the_docs_answers_200_with_json(server, request_id, document, command):
    address = server.url.removeprefix("http://")
    runnable = command.replace("localhost:3000", address).replace("<request_id of the answer>", request_id)
    out = subprocess.run(
        ["bash", "-c", runnable + " -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=60, check=True
    )
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", (document, command, body)
    assert isinstance(json.loads(body), dict)


def test_the_example_answer_is_the_live_one(client):
    """The README promises these items and scores from `make serve`'s model on any AVX2 machine: the session's
    MovieLens model is that model (the default training). Scores to 1e-5, against a last digit printed apart."""
    shown = json.loads(readme_blocks("json")[0])
    live = client.post("/recommend", json={"user_id": "196", "k": 3}).json()
    assert shown.keys() == live.keys()
    assert [item.keys() for item in shown["recommendations"]] == [item.keys() for item in live["recommendations"]]
    assert [(i["item_id"], i["title"]) for i in shown["recommendations"]] == [
        (i["item_id"], i["title"]) for i in live["recommendations"]
    ]
    assert [i["score"] for i in shown["recommendations"]] == pytest.approx(
        [i["score"] for i in live["recommendations"]], abs=1e-5
    )


def test_the_python_example_runs_and_prints_three_titles(server):
    (example,) = readme_blocks("python")
    code = example.replace("http://localhost:3000", server.url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    titles = ast.literal_eval(out.stdout.strip().splitlines()[-1])  # the example prints a list of titles
    assert isinstance(titles, list) and len(titles) == 3 and all(isinstance(t, str) and t for t in titles)
