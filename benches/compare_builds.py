"""Two builds of kdloss, timed in one run: the before and after of a change.

    python benches/compare_builds.py BEFORE_PYTHON AFTER_PYTHON [--rounds 7] [--quick]

Each argument is a Python interpreter with its own kdloss installed (a virtual environment's
``bin/python``). Every round starts one process per build, in alternating order, and each
process times every case (the median of its samples); the tables give, per case, the median
over rounds for each build and their ratio. Processes of the two builds take turns, so a slow
phase of the shared machine hits both alike.

The cases: the loss with and without its gradient, ``kl_divergence``, ``cross_entropy``,
``softmax`` and ``log_softmax``, on seeded float32 logits (T = 2, alpha = 0.5) at the shapes of
the suite, (64, 1000), (256, 32000), (8, 128256) and (4096, 10), on one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence

from build_cases import OPS, SETUP

SHAPES = ((64, 1000), (256, 32000), (8, 128256), (4096, 10))

# Runs inside each build's interpreter: times every case, prints {case: median seconds}.
WORKER = (
    SETUP
    + r"""
import json, sys, time

shapes, ops, samples = json.loads(sys.argv[1])
result = {}
for rows, classes in shapes:
    calls = cases(rows, classes)
    for op in ops:
        f = calls[op]
        f()
        start = time.perf_counter()
        f()
        once = time.perf_counter() - start
        # Each sample lasts at least 5 ms.
        reps = max(1, int(0.005 / max(once, 1e-7)))
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            for _ in range(reps):
                f()
            times.append((time.perf_counter() - start) / reps)
        times.sort()
        result[f"{op} {rows}x{classes}"] = times[len(times) // 2]
print(json.dumps(result))
"""
)


def run_build(python: str, samples: int) -> dict[str, float]:
    spec = json.dumps([SHAPES, OPS, samples])
    done = subprocess.run([python, "-c", WORKER, spec], check=True, capture_output=True, text=True)
    timings: dict[str, float] = json.loads(done.stdout)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="Python interpreter with the first build")
    parser.add_argument("after", help="Python interpreter with the second build")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=9, help="samples per case per process")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5 samples")
    args = parser.parse_args(argv)
    rounds, samples = (3, 5) if args.quick else (args.rounds, args.samples)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for name in order:
            runs[name].append(run_build(getattr(args, name), samples))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    cases = list(runs["before"][0])
    print(f"{rounds} rounds, medians (us), 1 thread, float32\n")
    print(f"| {'case':<26} | {'before':>10} | {'after':>10} | {'after/before':>12} |")
    print(f"|{'-' * 28}|{'-' * 12}:|{'-' * 12}:|{'-' * 14}:|")
    for case in cases:
        b = statistics.median(run[case] for run in runs["before"]) * 1e6
        a = statistics.median(run[case] for run in runs["after"]) * 1e6
        print(f"| {case:<26} | {b:>10.1f} | {a:>10.1f} | {a / b:>12.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
