"""Speed of the fused loss at every SIMD level this CPU has (``KDLOSS_SIMD``), in one run.

Each level runs in its own interpreter (the level is chosen at import), one level after
another, repeated in rounds so that a slow phase of a shared machine hits every level alike.
A level that is correct but silently not vectorized shows up here as a large ns/element.

    python benches/simd_levels.py [--threads 1] [--rounds 3] [--shapes 256x32000,64x1000,4096x10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import kdloss

CHILD = r"""
import json, sys, time
import numpy as np
import kdloss

shapes, threads, reps = json.loads(sys.argv[1])
kdloss.set_num_threads(threads)
kd = kdloss.DistillationLoss(temperature=2.0, alpha=0.5)
rng = np.random.default_rng(0)
out = {"simd": kdloss.build_info()["simd"], "times": {}}
for b, c in shapes:
    s = rng.standard_normal((b, c), dtype=np.float32)
    t = rng.standard_normal((b, c), dtype=np.float32)
    y = rng.integers(0, c, size=b)
    g = np.empty_like(s)
    for mode in ("forward", "forward_backward"):
        call = (lambda: kd(s, t, y)) if mode == "forward" else (
            lambda: kd.forward_backward(s, t, y, out=g))
        call()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out["times"][f"{b}x{c}/{mode}"] = times
print(json.dumps(out))
"""


def _shape(text: str) -> tuple[int, int]:
    b, c = text.lower().split("x")
    return int(b), int(c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=15, help="timed calls per round")
    parser.add_argument("--shapes", default="256x32000,64x1000,8x128256,4096x10")
    parser.add_argument("--json", help="write raw timings here")
    args = parser.parse_args()
    shapes = [_shape(s) for s in args.shapes.split(",")]
    levels = kdloss.build_info()["simd_available"]
    samples: dict[str, dict[str, list[float]]] = {lv: {} for lv in levels}
    for r in range(args.rounds):
        for level in levels:
            print(f"round {r + 1}/{args.rounds}: {level}", file=sys.stderr)
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps([shapes, args.threads, args.reps])],
                env=dict(os.environ, KDLOSS_SIMD=level),
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout)
            if result["simd"] != level:
                raise SystemExit(f"asked for {level}, ran {result['simd']}")
            for key, times in result["times"].items():
                samples[level].setdefault(key, []).extend(times)
    keys = list(samples[levels[0]])
    header = f"{'case':<32}" + "".join(f"{lv + ' ms':>14}{'ns/el':>8}" for lv in levels)
    print(f"threads={args.threads}, float32, T=2, alpha=0.5; medians over {args.rounds} rounds")
    print(header)
    for key in keys:
        b, c = _shape(key.split("/")[0])
        cells = ""
        for lv in levels:
            med = statistics.median(samples[lv][key])
            cells += f"{med * 1e3:>14.3f}{med * 1e9 / (b * c):>8.2f}"
        print(f"{key:<32}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "samples": samples}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
