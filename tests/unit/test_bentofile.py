"""bentofile.yaml copies the serving pins from pyproject.toml by hand: they must agree."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.support import REPO

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*$")


def pins(requirements: list[str]) -> dict[str, str]:
    """Exact pins by normalised package name; anything not pinned exactly fails the test."""
    found = {}
    for requirement in requirements:
        match = PIN.match(requirement)
        assert match, f"not an exact pin: {requirement!r}"
        found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def test_every_bentofile_package_is_pinned_as_in_pyproject():
    bento = pins(yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"])
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert bento, "bentofile.yaml lists no packages"
    assert not set(bento) - set(project), "in bentofile.yaml but not a dependency in pyproject.toml"
    assert {name: bento[name] for name in bento} == {name: project[name] for name in bento}


def test_bento_includes_no_tests_or_training_code():
    include = yaml.safe_load((REPO / "bentofile.yaml").read_text())["include"]
    assert not [p for p in include if p.startswith(("tests", "train", "benchmarks"))]
    assert "serving/*.py" in include and "service.py" in include
