"""``python -m kdloss bench``, its options and its run: kdloss against the implementations
people would use instead.

On seeded synthetic float32 logits (T = 2, alpha = 0.5) it times, for each shape, the loss with
its gradient (``forward_backward``) and without (``forward``) for:

- kdloss, through the public :class:`kdloss.DistillationLoss`;
- the NumPy float64 reference, :mod:`kdloss.reference`;
- a hand-written NumPy float32 formulation (:mod:`kdloss._numpy_f32`);
- plain Python on lists of floats (:mod:`kdloss._purepython`), on shapes where one call takes
  at most a couple of seconds;
- PyTorch's ``F.kl_div`` + ``F.cross_entropy`` with autograd, when ``import torch`` works.

Samples of the implementations are interleaved so that a slow phase of a shared machine hits
all of them alike. A sample is two calls: the first, timed on its own, finds the caches as the
other implementations left them; the second, whose time the tables report, runs as a call in a
loop does (``timeit``'s figure). Before each sample the process waits until none of its threads
is busy: PyTorch's OpenMP workers spin for 10 to 20 ms after each call. The tables report
medians and how many times faster kdloss is than each peer, measured in the same run; the JSON
output also holds the first calls' times. Before any timing, kdloss's loss and gradient are
checked against the reference.

A roofline column puts kdloss next to a lower bound for each call, from two figures the run
measures itself: streaming read bandwidth at the thread count in use and the single-thread cost
of the kernels' exp (:class:`kdloss.bench.machine.Limits`). ``benches/suite.py`` builds on the
other modules of :mod:`kdloss.bench` (inputs, peers, interleaved timing, probes, tables) for the
full benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

import kdloss

from .console import BenchError, Progress, plural
from .machine import LoadMeter, describe_machine, machine_info, probe_limits
from .plot import load_pyplot, write_plot
from .report import bound_formula, format_table, to_json
from .timing import Settings
from .workloads import (
    ALPHA,
    DEFAULT_SHAPES,
    GRAD_TOL,
    LOSS_RTOL,
    MODE_TITLES,
    MODES,
    SEED,
    TEMPERATURE,
    Impl,
    bind_kdloss,
    bind_numpy_f32,
    bind_python,
    bind_reference,
    calibrate_python,
    check_kdloss,
    import_torch,
    make_case,
    measure_shape,
    torch_binder,
)

__all__ = ["add_arguments", "parse_shapes", "positive_int", "run"]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        part = part.strip().lower().replace("\u00d7", "x")
        if not part:
            continue
        rows, sep, classes = part.partition("x")
        try:
            shape = (int(rows), int(classes))
        except ValueError:
            shape = (0, 0)
        if not sep or shape[0] < 1 or shape[1] < 1:
            raise argparse.ArgumentTypeError(
                f"bad shape {part!r}: expected ROWSxCLASSES with both >= 1, e.g. 64x1000"
            )
        shapes.append(shape)
    if not shapes:
        raise argparse.ArgumentTypeError("no shape given")
    return shapes


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m kdloss bench`` to ``parser``."""
    default = ",".join(f"{b}x{c}" for b, c in DEFAULT_SHAPES)
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="threads for kdloss (kdloss.set_num_threads) and PyTorch; default: kdloss's",
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        metavar="BxC[,BxC...]",
        help=f"comma-separated shapes (rows x classes); default: {default}",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="K",
        help="time every implementation exactly K times per shape instead of by time budget",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run with fewer repetitions (a few seconds)"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write all raw timings, medians and machine info as JSON"
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="save a chart of time per element by shape (needs matplotlib: kdloss[plot])",
    )


def _settings(quick: bool, repeat: int | None) -> Settings:
    if quick:
        return Settings(
            budget_s=0.1,
            min_reps=3,
            max_reps=30,
            warmup_s=0.3,
            repeat=repeat,
            python_cutoff_s=0.5,
        )
    return Settings(
        budget_s=0.5, min_reps=3, max_reps=300, warmup_s=0.6, repeat=repeat, python_cutoff_s=2.0
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the benchmark described by the parsed ``args``; return the exit status."""
    stream = sys.stdout if out is None else out
    try:
        return _run(args, stream)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, out: TextIO) -> int:
    shapes: list[tuple[int, int]] = list(args.shapes or DEFAULT_SHAPES)
    settings = _settings(bool(args.quick), args.repeat)
    plot_path: str | None = args.plot
    json_path: str | None = args.json
    if plot_path is not None:
        load_pyplot()  # fail before measuring, not after
    if args.threads is not None:
        kdloss.set_num_threads(int(args.threads))
    threads = int(kdloss.get_num_threads())
    torch = import_torch()
    machine = machine_info(threads, torch)

    impls = [
        Impl("kdloss", "kdloss", bind_kdloss, 0.0),
        Impl("reference", "NumPy f64 reference", bind_reference, 1e-12),
        Impl("numpy_f32", "NumPy f32", bind_numpy_f32, 1e-4),
        Impl("python", "pure Python", bind_python, 1e-9),
    ]
    if torch is not None:
        impls.append(Impl("torch", "PyTorch", torch_binder(torch, threads), 1e-4))

    build = machine.get("kdloss_build", {})
    simd = f", SIMD {build['simd']}" if isinstance(build, dict) and "simd" in build else ""
    print(
        f"kdloss {machine['kdloss_version']} benchmark: float32 logits, T={TEMPERATURE:g}, "
        f"alpha={ALPHA:g}, {threads} thread(s){simd}",
        file=out,
    )
    print(describe_machine(machine), file=out, flush=True)

    progress = Progress(sys.stderr)
    started = time.monotonic()
    load = LoadMeter()
    cases = []
    for b, c in shapes:
        progress.update(f"generating {b}x{c} inputs")
        cases.append(make_case(b, c))
    worst_loss, worst_grad = check_kdloss(cases, progress)
    progress.clear()
    print(
        f"check: kdloss matches kdloss.reference (float64) on {plural(len(cases), 'shape')}: loss "
        f"within {worst_loss:.1e} relative (limit {LOSS_RTOL:g}), gradient within "
        f"{worst_grad:.1e} of max |grad|",
        file=out,
        flush=True,
    )
    python_rate = calibrate_python(progress)
    limits = probe_limits([threads], progress, rounds=1 if args.quick else 2)

    results = []
    for n, case in enumerate(cases):
        label = f"[{n + 1}/{len(cases)}] {case.name}"
        results.append(measure_shape(case, impls, settings, python_rate, progress, label))
    if not args.quick:
        probe_limits([threads], progress, rounds=1, limits=limits)
    progress.clear()
    elapsed = time.monotonic() - started
    print(f"limits: {limits.describe(threads)}", file=out)
    print(bound_formula(threads), file=out)

    how = (
        f"{settings.repeat} samples each"
        if settings.repeat is not None
        else f"samples by time budget ({settings.min_reps} to {settings.max_reps})"
    )
    for mode in MODES:
        print(file=out)
        print(
            f"{MODE_TITLES[mode]}: median ms; in parentheses, how many times faster kdloss is",
            file=out,
        )
        print(format_table(results, impls, mode, limits, threads), file=out)
    print(file=out)
    skipped = {
        res.case.name: res.timings["python"]["forward_backward"].skipped
        for res in results
        if res.timings["python"]["forward_backward"].skipped
    }
    notes = [
        f"{how}, interleaved, each the second of two calls; {elapsed:.0f} s in all; "
        f"{load.describe()}"
    ]
    if skipped:
        notes.append(
            "pure Python skipped at "
            + ", ".join(f"{name} ({why})" for name, why in skipped.items())
        )
    print("; ".join(notes) + ".", file=out, flush=True)

    config = {
        "temperature": TEMPERATURE,
        "alpha": ALPHA,
        "dtype": "float32",
        "seed": SEED,
        "shapes": [list(s) for s in shapes],
        "threads": threads,
        "quick": bool(args.quick),
        "repeat": settings.repeat,
        "budget_s": settings.budget_s,
        "min_reps": settings.min_reps,
        "max_reps": settings.max_reps,
        "python_cutoff_s": settings.python_cutoff_s,
        "elapsed_s": elapsed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    check = {
        "loss_rtol": LOSS_RTOL,
        "grad_tol": GRAD_TOL,
        "worst_loss_rel_error": worst_loss,
        "worst_grad_error": worst_grad,
        "passed": True,
    }
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(to_json(results, impls, machine, config, check, limits), f, indent=2)
            f.write("\n")
        print(f"wrote {json_path}", file=out)
    if plot_path is not None:
        write_plot(plot_path, results, impls, machine, limits)
        print(f"wrote {plot_path}", file=out)
    return 0
