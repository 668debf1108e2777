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


def test_readme_shows_the_benchmark_and_test_commands() -> None:
    text = _readme_text()
    assert "python -m kdloss bench" in text
    assert "pytest" in text
