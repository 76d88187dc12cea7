"""Every ``python -m`` command the README and docs show names a module that exists and flags it accepts.

The commands are taken from the files (shell blocks and inline code), and
each is run as written up to the end of its argument parsing: the module's
own parser reads the arguments, then the run stops before any work (training,
a benchmark). A renamed module, a removed flag or a value of the wrong type
fails here instead of in a reader's terminal. What the servers answer to the
documented ``curl`` calls is checked in ``tests/e2e/test_readme_examples.py``.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys

import pytest

from tests.support import REPO
from train.kernels import NATIVE

DOCUMENTS = ("README.md", "ARCHITECTURE.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]*python -m [^`\n]*)`(?!`)")


def documented_commands(text: str) -> list[str]:
    """The ``python -m`` commands of a Markdown text: shell-block lines (continuations joined) and inline code."""
    commands = []
    for language, body in FENCE.findall(text):
        if language in ("bash", "sh", "shell", ""):
            commands += [line for line in body.replace("\\\n", " ").splitlines() if "python -m " in line]
    outside_blocks = FENCE.sub("", text)
    commands += INLINE.findall(outside_blocks)
    return [shlex.join(shlex.split(command, comments=True)) for command in commands]


def module_and_arguments(command: str) -> tuple[str, list[str]]:
    words = shlex.split(command)
    start = words.index("-m")
    return words[start + 1], words[start + 2 :]


COMMANDS = sorted({(doc, command) for doc in DOCUMENTS for command in documented_commands((REPO / doc).read_text())})


class Parsed(Exception):
    """Raised once a module's parser accepted its arguments: the command stops there."""


def test_the_extraction_reads_blocks_continuations_comments_and_inline_code():
    text = (
        "Run `.venv/bin/python -m train.studies periods --set seed=1` first.\n"
        "```bash\n"
        ".venv/bin/python -m train --interactions a.csv \\\n    --users b.csv   # a comment\n"
        "make test\n"
        "```\n"
        "```python\nimport os  # python -m not a shell line\n```\n"
    )
    assert documented_commands(text) == [
        ".venv/bin/python -m train --interactions a.csv --users b.csv",
        ".venv/bin/python -m train.studies periods --set seed=1",
    ]


def test_the_documents_show_the_main_commands():
    modules = {module_and_arguments(command)[0] for _, command in COMMANDS}
    assert modules >= {"train", "train.studies", "train.freshness", "serving.batch", "features.synthetic"}


@pytest.mark.filterwarnings("ignore:'[a-z_.]+' found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize(("document", "command"), COMMANDS, ids=[f"{d}:{c.split(' -m ')[1]}" for d, c in COMMANDS])
def test_a_documented_command_parses(document, command, monkeypatch, capsys):
    module, arguments = module_and_arguments(command)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module, *arguments])
    monkeypatch.setenv(NATIVE, "1")  # the training commands would otherwise restart the interpreter: pytest's
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except Parsed:
        return
    except SystemExit as exit_:
        if exit_.code == 0 and "--help" in arguments:
            assert "usage:" in capsys.readouterr().out
            return
        raise AssertionError(f"{document}: `{command}` exits {exit_.code}: {capsys.readouterr().err}") from None
    raise AssertionError(f"{document}: `{command}` never parsed its arguments")
