"""Peak memory of one distillation-loss call, as multiples of one (B, C) float32 array.

kdloss promises that ``forward`` allocates nothing of size B x C and that ``forward_backward``
allocates only the gradient (one B x C array; nothing at all with ``out=``). This script shows
it at (4096, 32000) float32 by default, next to the NumPy float32 formulation a user would
write, whose temporaries are whole B x C arrays.

Each case runs in a fresh Python process so that no case inherits another's heap. The process
creates and touches its inputs, makes one small warm-up call (so that code loading and thread
start-up are not counted), resets the kernel's resident-set high-water mark
(``/proc/self/clear_refs``), makes the call, and reports the high-water mark above the resident
size it had just before. Where the mark cannot be reset, ``VmHWM`` (or ``ru_maxrss``) before
and after the call are compared instead; the inputs are generated in place, so the mark then is
the resident size.

Run: ``python benches/peak_memory.py [--shape 4096x32000] [--threads N] [--cases ...]``.
Exits 1 if kdloss exceeds its bound (forward: 0.1 of an array; forward_backward: 1.1 arrays;
with ``out=``: 0.1), 2 if a case failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
from typing import Any, Callable

CASES: dict[str, str] = {
    "kdloss-forward": "kdloss forward",
    "kdloss-forward_backward": "kdloss forward_backward",
    "kdloss-forward_backward-out": "kdloss forward_backward(out=)",
    "numpy_f32-forward": "NumPy f32 forward",
    "numpy_f32-forward_backward": "NumPy f32 forward_backward",
    "reference-forward": "NumPy f64 reference forward",
    "reference-forward_backward": "NumPy f64 reference forward_backward",
}
DEFAULT_CASES = (
    "kdloss-forward",
    "kdloss-forward_backward",
    "kdloss-forward_backward-out",
    "numpy_f32-forward",
    "numpy_f32-forward_backward",
)
# Upper bounds for kdloss, in B x C float32 arrays; the small slack covers per-thread row
# scratch, allocator bookkeeping and page-granular accounting.
BOUNDS = {
    "kdloss-forward": (0.1, "nothing of size BxC"),
    "kdloss-forward_backward": (1.1, "the gradient only"),
    "kdloss-forward_backward-out": (0.1, "nothing: the gradient goes to out"),
}
TEMPERATURE = 2.0
ALPHA = 0.5


# ------------------------------------------------------------------------------------------
# Child: one case in this process


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 64


def _make_call(case: str, rows: int, classes: int) -> tuple[Callable[[], object], int]:
    """Build inputs of shape (rows, classes) and return the call to measure and their bytes."""
    import numpy as np

    rng = np.random.default_rng(0)
    # Filled in place: no temporary raises the high-water mark above the inputs themselves.
    teacher = np.empty((rows, classes), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=teacher)
    student = np.empty((rows, classes), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=student)
    labels = rng.integers(0, classes, size=rows, dtype=np.int64)
    input_bytes = teacher.nbytes + student.nbytes + labels.nbytes
    impl, _, mode = case.partition("-")

    if impl == "kdloss":
        import kdloss

        loss = kdloss.DistillationLoss(TEMPERATURE, ALPHA)
        if mode == "forward":
            return (lambda: loss.forward(student, teacher, labels)), input_bytes
        if mode == "forward_backward":
            return (lambda: loss.forward_backward(student, teacher, labels)), input_bytes
        out = np.zeros_like(student)  # zeros_like touches every page before the baseline
        out.fill(0.0)
        return (lambda: loss.forward_backward(student, teacher, labels, out=out)), input_bytes
    if impl == "numpy_f32":
        from kdloss import _numpy_f32

        if mode == "forward":
            return (
                lambda: _numpy_f32.distillation_loss(student, teacher, labels, TEMPERATURE, ALPHA)
            ), input_bytes
        return (
            lambda: _numpy_f32.distillation_loss_and_grad(
                student, teacher, labels, TEMPERATURE, ALPHA
            )
        ), input_bytes
    if impl == "reference":
        from kdloss import reference

        if mode == "forward":
            return (
                lambda: reference.distillation_loss(
                    student, teacher, labels, temperature=TEMPERATURE, alpha=ALPHA
                )
            ), input_bytes
        return (
            lambda: reference.distillation_loss_and_grad(
                student, teacher, labels, temperature=TEMPERATURE, alpha=ALPHA
            )
        ), input_bytes
    raise ValueError(f"unknown case {case!r}")


def run_child(case: str, rows: int, classes: int, threads: int | None) -> dict[str, Any]:
    """Measure one case in this process; return the numbers as a dict."""
    import kdloss

    if threads is not None:
        kdloss.set_num_threads(threads)
    # Warm-up on a small input: loads code, starts the thread pool, sizes per-thread scratch.
    small, _ = _make_call(case, 64, min(classes, 1024))
    small()
    del small
    call, input_bytes = _make_call(case, rows, classes)
    gc.collect()

    reset = _reset_peak()
    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    maxrss_before = _maxrss_bytes()
    result = call()
    hwm_after = _status_kib("VmHWM")
    maxrss_after = _maxrss_bytes()
    del result

    if reset and rss_before is not None and hwm_after is not None:
        method = "VmHWM after clear_refs"
        extra = (hwm_after - rss_before) * 1024
    elif hwm_before is not None and hwm_after is not None:
        method = "VmHWM before/after"
        extra = (hwm_after - hwm_before) * 1024
    else:
        method = "ru_maxrss before/after"
        extra = maxrss_after - maxrss_before
    return {
        "case": case,
        "shape": [rows, classes],
        "threads": kdloss.get_num_threads(),
        "input_bytes": input_bytes,
        "extra_bytes": max(extra, 0),
        "method": method,
        "peak_rss_bytes": None if hwm_after is None else hwm_after * 1024,
    }


# ------------------------------------------------------------------------------------------
# Parent: one subprocess per case, then the table


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _parse_shape(text: str) -> tuple[int, int]:
    rows, sep, classes = text.lower().partition("x")
    try:
        shape = (int(rows), int(classes))
    except ValueError:
        shape = (0, 0)
    if not sep or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: expected ROWSxCLASSES, e.g. 4096x32000"
        )
    return shape


def _parse_cases(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}"
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    """Run every case in its own process and print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--shape", type=_parse_shape, default=(4096, 32000), metavar="BxC")
    parser.add_argument("--threads", type=int, metavar="N", help="kdloss threads")
    parser.add_argument(
        "--cases",
        type=_parse_cases,
        default=list(DEFAULT_CASES),
        metavar="CASE[,CASE...]",
        help=f"default: {','.join(DEFAULT_CASES)}; all: {','.join(CASES)}",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    parser.add_argument("--child", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows, classes = args.shape

    if args.child is not None:
        print(json.dumps(run_child(args.child, rows, classes, args.threads)))
        return 0

    array_bytes = rows * classes * 4
    print(
        f"peak memory of one call at ({rows}, {classes}) float32, T={TEMPERATURE:g}, "
        f"alpha={ALPHA:g}; one BxC float32 array = {array_bytes:,} bytes ({_mb(array_bytes)})"
    )
    results: list[dict[str, Any]] = []
    table = [("case", "extra bytes", "x BxC", "kdloss bound", "check")]
    status = 0
    for case in args.cases:
        print(f"  running {CASES[case]} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", case]
        cmd += ["--shape", f"{rows}x{classes}"]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{case}: failed (exit {proc.returncode})\n{proc.stderr}", file=sys.stderr)
            table.append((CASES[case], "failed", "", "", ""))
            status = max(status, 2)
            continue
        res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        multiple = res["extra_bytes"] / array_bytes
        bound, why = BOUNDS.get(case, (None, ""))
        verdict = ""
        if bound is not None:
            ok = multiple <= bound
            verdict = "ok" if ok else "EXCEEDS"
            if not ok:
                status = max(status, 1)
        table.append(
            (
                CASES[case],
                f"{res['extra_bytes']:,} ({_mb(res['extra_bytes'])})",
                f"{multiple:.2f}",
                "" if bound is None else f"<= {bound:g} ({why})",
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])]
        cells += [row[3].ljust(widths[3]), row[4]]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if results:
        print(
            f"measured with {results[0]['method']}, {results[0]['threads']} kdloss thread(s); "
            "extra = high-water mark of the resident set during the call minus the resident set "
            "just before it (inputs already created and touched)"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"array_bytes": array_bytes, "results": results}, f, indent=2)
            f.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
