"""bentofile.yaml copies the serving pins from pyproject.toml by hand: they must agree."""

from __future__ import annotations

import ast
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
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


BENTOFILES = ["bentofile.yaml", "bentofile.split.yaml"]


@pytest.mark.parametrize("bentofile", BENTOFILES)
def test_every_bentofile_package_is_pinned_as_in_pyproject(bentofile):
    bento = pins(yaml.safe_load((REPO / bentofile).read_text())["python"]["packages"])
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert bento, "bentofile.yaml lists no packages"
    assert not set(bento) - set(project), "in bentofile.yaml but not a dependency in pyproject.toml"
    assert {name: bento[name] for name in bento} == {name: project[name] for name in bento}


@pytest.mark.parametrize("bentofile", BENTOFILES)
def test_bento_includes_no_tests_or_training_code(bentofile):
    include = yaml.safe_load((REPO / bentofile).read_text())["include"]
    assert not [p for p in include if p.startswith(("tests", "train", "benchmarks"))]
    assert "serving/*.py" in include and "service.py" in include


def first_party_imports(path: Path) -> set[Path]:
    """Files of this repo that ``path`` imports (``features.schema`` -> features/schema.py, or a package's __init__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            for candidate in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
                if candidate.exists():
                    found.add(candidate)
    return found


@pytest.mark.parametrize("bentofile", BENTOFILES)
def test_bento_includes_everything_the_service_imports(bentofile):
    config = yaml.safe_load((REPO / bentofile).read_text())
    include = config["include"]
    seen, todo = set(), [REPO / (config["service"].split(":")[0] + ".py")]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(first_party_imports(path))
    missing = [str(p.relative_to(REPO)) for p in seen if not any(fnmatch(str(p.relative_to(REPO)), g) for g in include)]
    assert not missing, f"{config['service']} needs these, {bentofile} does not include them: {sorted(missing)}"
