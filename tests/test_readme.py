"""The README's usage example runs as written, and CI runs the README's test command exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_text() -> str:
    if not README.is_file():
        pytest.fail(f"README.md not found at {README}")
    return README.read_text(encoding="utf-8")


def test_usage_example_runs() -> None:
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", _readme_text(), flags=re.DOTALL | re.M)
    assert blocks, "README.md has no ```python block"
    code = compile(blocks[0], str(README), "exec")
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(code, namespace)


def _shell_commands() -> list[str]:
    blocks = re.findall(r"^```sh[ \t]*\n(.*?)^```", _readme_text(), flags=re.DOTALL | re.M)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_commands = [c for c in _shell_commands() if "-m pytest" in c]
    assert test_commands, "README.md shows no command that runs the tests"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    for command in test_commands:
        assert f"bash -c '{command}'" in ci, command
