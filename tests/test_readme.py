"""The README's usage example runs as written, and the README shows the commands it promises."""

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


def test_readme_opens_with_the_benchmark_and_test_commands() -> None:
    first, second = _shell_commands()[:2]
    assert first.endswith("python -m kdloss bench")
    assert first.startswith("python3 -m venv .venv && ")
    assert second.startswith("python3 -m venv .venv && ")
    assert second.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_command = _shell_commands()[1]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert f"bash -c '{test_command}'" in ci
