"""The numeric tests pass at every instruction-set level this CPU offers, not just the default.

The level is chosen at import by ``KDLOSS_SIMD``, so each level runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kdloss
import pytest

TESTS = Path(__file__).resolve().parent
NUMERIC_TESTS = [
    "test_parity.py",
    "test_special_values.py",
    "test_gradient.py",
    "test_long_rows.py",
]


def _levels() -> list[str]:
    info = kdloss.build_info()
    available = list(info["simd_available"])
    assert info["simd"] in available
    assert "scalar" in available
    return available


def _env(level: str) -> dict[str, str]:
    env = dict(os.environ)
    env["KDLOSS_SIMD"] = level
    return env


@pytest.mark.parametrize("level", _levels())
def test_numeric_suite_at_level(level: str, tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import kdloss; print(kdloss.build_info()['simd'])"],
        capture_output=True,
        text=True,
        env=_env(level),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == level
    if level == kdloss.build_info()["simd"]:
        return  # this interpreter's own run covers it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *[str(TESTS / name) for name in NUMERIC_TESTS],
        ],
        capture_output=True,
        text=True,
        env=_env(level),
        cwd=TESTS.parent,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
