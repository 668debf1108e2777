"""Instructions per call of two builds of kdloss, counted by valgrind: repeatable where timings
are not (a shared machine's other load changes the seconds, not the count).

    python benches/instruction_counts.py BEFORE_PYTHON AFTER_PYTHON [--simd avx2] [--quick]

Each argument is a Python interpreter with its own kdloss installed. For every case (the loss
with and without its gradient, ``kl_divergence``, ``cross_entropy``, ``softmax``,
``log_softmax``; seeded float32 logits, T = 2, alpha = 0.5, one thread) each build runs under
``valgrind --tool=callgrind``, and the instructions executed inside kdloss's native module are
summed and divided by the number of calls. valgrind has no AVX-512, so the count is for the
level given by ``--simd`` (``avx2`` by default, through ``KDLOSS_SIMD``); instruction counts
are a proxy for time, not a measure of it (a divide counts as one).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from build_cases import OPS, SETUP

SHAPES = ((64, 1000), (4096, 10), (4, 128256))
CALLS = 4

WORKER = (
    SETUP
    + r"""
import sys

op, rows, classes, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
f = cases(rows, classes)[op]
for _ in range(calls):
    f()
"""
)


def count(python: str, op: str, shape: tuple[int, int], simd: str) -> float:
    """Instructions per call inside the native module."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, KDLOSS_SIMD=simd)
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                python,
                "-c",
                WORKER,
                op,
                str(shape[0]),
                str(shape[1]),
                str(CALLS),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        report = subprocess.run(
            ["callgrind_annotate", "--threshold=100", str(out)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    total = 0
    for line in report.splitlines():
        if "_core.abi3.so" in line or "_core.cpython" in line:
            match = re.match(r"\s*([\d,]+)", line)
            if match:
                total += int(match.group(1).replace(",", ""))
    return total / CALLS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="Python interpreter with the first build")
    parser.add_argument("after", help="Python interpreter with the second build")
    parser.add_argument("--simd", default="avx2", help="KDLOSS_SIMD for both (default avx2)")
    parser.add_argument("--quick", action="store_true", help="the first shape only")
    args = parser.parse_args(argv)
    shapes = SHAPES[:1] if args.quick else SHAPES
    print(f"instructions per call inside kdloss, KDLOSS_SIMD={args.simd}, 1 thread, float32\n")
    print(f"| {'case':<24} | {'before':>12} | {'after':>12} | {'after/before':>12} |")
    print(f"|{'-' * 26}|{'-' * 14}:|{'-' * 14}:|{'-' * 14}:|")
    for rows, classes in shapes:
        for op in OPS:
            b = count(args.before, op, (rows, classes), args.simd)
            a = count(args.after, op, (rows, classes), args.simd)
            case = f"{op} {rows}x{classes}"
            print(f"| {case:<24} | {b:>12,.0f} | {a:>12,.0f} | {a / b:>12.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
