"""Every private BentoML and uvicorn name the project relies on is still there (serving/internals.py)."""

from __future__ import annotations

import pytest

from serving import internals
from serving.internals import INTERNALS, Internal, problems


@pytest.mark.parametrize("internal", INTERNALS, ids=[i.name for i in INTERNALS])
def test_each_private_name_is_as_relied_on(internal: Internal):
    assert internal.present(), f"{internal.name}, used by {internal.used_by}"


def test_a_name_that_moved_is_one_line_naming_it_and_its_user(monkeypatch):
    moved = Internal("bentoml._internal.gone", "serving/x.py", internals._attribute("bentoml", "_internal.gone"))
    changed = Internal(
        "proxy2.AsyncClient._renamed",
        "serving/y.py",
        internals._assigns("_bentoml_impl.client.proxy2", "AsyncClient", ("_renamed",)),
    )
    monkeypatch.setattr(internals, "INTERNALS", (*INTERNALS, moved, changed))
    assert problems() == [
        "bentoml._internal.gone (serving/x.py): AttributeError: module 'bentoml._internal' has no attribute 'gone'",
        "proxy2.AsyncClient._renamed (serving/y.py): not as relied on",
    ]
