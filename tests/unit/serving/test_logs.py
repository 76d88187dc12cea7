"""Client errors as one WARNING line, server faults with their traceback, floods rate-limited."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ValidationError

from serving.logs import ClientErrorsAsWarnings, RateLimit


class Body(BaseModel):
    k: int


class Attributes(BaseModel):
    values: dict[str, list[str]]


def record_for(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        import sys

        info = sys.exc_info()
    return logging.LogRecord(
        "bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/recommend", "POST"), info
    )


def test_validation_error_becomes_one_warning_line():
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"k": "x"})
    record = record_for(caught.value)
    assert ClientErrorsAsWarnings().filter(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage().startswith("400 /recommend [POST]: invalid request: k: Input should be a valid integer")
    assert "\n" not in record.getMessage()


def test_a_field_name_with_a_newline_cannot_start_a_line_of_its_own():
    """Filter attributes and user attribute keys are the client's text: a probe forged an [ERROR] line with one."""
    forged = "x\n2026-12-06T13:59:59+0000 [ERROR] [entry_service:recsys:1] FORGED"
    with pytest.raises(ValidationError) as caught:
        Attributes.model_validate({"values": {forged: [1]}})
    record = record_for(caught.value)
    assert ClientErrorsAsWarnings().filter(record)
    line = record.getMessage()
    assert "\n" not in line and "values.x\\n2026" in line


def test_a_long_account_is_cut_short():
    with pytest.raises(ValidationError) as caught:
        Attributes.model_validate({"values": {"z" * 200_000: [1]}})
    record = record_for(caught.value)
    assert ClientErrorsAsWarnings().filter(record)
    assert len(record.getMessage()) < 600


def test_server_fault_keeps_its_traceback():
    record = record_for(RuntimeError("boom"))
    assert ClientErrorsAsWarnings().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_rate_limit_lets_a_burst_through_then_reports_what_it_held_back():
    now = [0.0]
    limit = RateLimit(burst=3, seconds=10, clock=lambda: now[0])

    def line(path: str) -> logging.LogRecord:
        return logging.LogRecord("recsys.edge", logging.WARNING, __file__, 1, "%d GET %s", (404, path), None)

    passed = [limit.filter(line(f"/x{i}")) for i in range(100)]
    assert passed.count(True) == 3
    other = logging.LogRecord("recsys.edge", logging.WARNING, __file__, 1, "%d GET %s", (401, "/"), None)
    assert limit.filter(other)  # another kind has its own budget
    now[0] = 11
    later = line("/y")
    assert limit.filter(later) and later.getMessage() == "404 GET /y [97 similar lines suppressed]"
