"""benchmarks.request_steps: a sample goes to its innermost named step, and py-spy's raw output is read as written."""

from __future__ import annotations

import os
import subprocess  # nosec B404: py-spy and this interpreter, fixed argv
import sys
import time
from pathlib import Path

import pytest

from benchmarks.request_steps import OTHER, record_command, shares, step_of
from benchmarks.serving import BIN

EDGE = "Edge.__call__ (serving/edge.py:120)"
APP = "ServiceAppFactory.api_endpoint (_bentoml_impl/server/app.py:785)"
ANSWER = "answer (serving/responses.py:60)"


def test_a_sample_goes_to_the_innermost_frame_a_step_names():
    assert step_of([EDGE, APP, ANSWER, "TwoStageRecommender.recommend (stages/pipeline.py:90)"]) == "pipeline (answer)"
    # Response objects are built inside answer(): the deeper step wins.
    assert step_of(
        [EDGE, APP, ANSWER, "to_responses (serving/responses.py:80)", "ranked (serving/responses.py:99)"]
    ) == ("response objects (to_responses)")
    # pydantic under BentoML's request parsing is validation; BentoML's own code around it is the framework.
    parse = "IOMixin.from_http_request (_bentoml_sdk/io_models.py:200)"
    assert step_of([EDGE, APP, parse, "BaseModel.model_validate_json (pydantic/main.py:700)"]) == (
        "validation (parse, check_requests)"
    )
    assert step_of([EDGE, APP]) == "framework (BentoML or FastAPI, Starlette)"
    assert step_of([EDGE, "read_body (serving/edge.py:280)"]) == "edge (admission, body, envelope)"
    assert step_of(["thread (0x7f)", "select (selectors.py:10)"]) == OTHER


def test_shares_weigh_each_stack_by_its_count(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{EDGE};{APP};{ANSWER} 3\n{EDGE};read_body (serving/edge.py:280) 1\n")
    found = shares(raw)
    assert found["pipeline (answer)"] == 0.75 and found["edge (admission, body, envelope)"] == 0.25
    assert sum(found.values()) == pytest.approx(1.0)


def test_py_spy_records_a_running_process_in_the_raw_format_read_here(tmp_path):
    spy = str(BIN / "py-spy")
    if os.geteuid() != 0:
        pytest.skip("py-spy needs root (or CAP_SYS_PTRACE) to read another process")
    busy = "def spin_in_answer():\n    while True:\n        sum(range(1000))\nspin_in_answer()\n"
    target = subprocess.Popen([sys.executable, "-c", busy])  # nosec B603
    try:
        time.sleep(0.3)
        raw = tmp_path / "raw.txt"
        subprocess.run(record_command(spy, target.pid, 1, raw), check=True, capture_output=True, timeout=60)  # nosec B603
    finally:
        target.kill()
        target.wait()
    assert "spin_in_answer (<string>" in Path(raw).read_text()
    assert shares(raw)[OTHER] == 1.0  # no step is named in a script outside the service
