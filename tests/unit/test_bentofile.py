"""The Bento installs exactly the serving requirements, pinned as in the lock, and packs every file serving imports."""

from __future__ import annotations

import ast
import re
import subprocess  # nosec B404
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from scripts.serving_requirements import SERVING
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


def requirement_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_serving_requirements_are_the_locked_versions_without_the_plotting_stack():
    serving = pins(requirement_lines(REPO / "requirements-serving.txt"))
    locked = pins(requirement_lines(REPO / "requirements.lock"))
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {name: locked.get(name) for name in serving} == serving, "regenerate: scripts/serving_requirements.py"
    assert {name: serving.get(name) for name in SERVING} == {name: project[name] for name in SERVING}
    assert not {"plotly", "matplotlib", "graphviz"} & set(serving)


@pytest.mark.parametrize("bentofile", BENTOFILES)
def test_the_bento_installs_exactly_the_serving_requirements(bentofile):
    config = yaml.safe_load((REPO / bentofile).read_text())
    python = config["python"]
    assert config["docker"]["dockerfile_template"] == "deploy/Dockerfile.template"
    assert python["requirements_txt"] == "requirements-serving.txt"
    assert python["pip_args"] == "--no-deps" and python["lock_packages"] is False
    assert "packages" not in python


def test_catboost_scores_without_its_plotting_dependencies():
    """What lets the image leave plotly, matplotlib and graphviz out: CatBoost fits and predicts without them."""
    blocked = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'plotly', 'matplotlib', 'graphviz'}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from catboost import CatBoost, Pool\n"
        "X = np.arange(40.0).reshape(20, 2)\n"
        "model = CatBoost({'iterations': 5, 'verbose': False, 'allow_writing_files': False, 'thread_count': 1})\n"
        "model.fit(Pool(X, label=(X[:, 0] > 20).astype(float)))\n"
        "print(len(model.predict(X)))\n"
    )
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)  # nosec
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20"


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
