"""``python -m kdloss bench``: kdloss against the implementations people would use instead.

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
of the kernels' exp (:class:`Limits`). ``benches/suite.py`` builds on the pieces here (inputs,
peers, interleaved timing, probes, tables) for the full benchmark suite.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np
from numpy.typing import NDArray

import kdloss
from kdloss import _core, _numpy_f32, _purepython, reference

__all__ = [
    "BenchError",
    "Case",
    "Limits",
    "LoadMeter",
    "Progress",
    "Settings",
    "Task",
    "Timing",
    "add_arguments",
    "bind_kdloss",
    "bind_numpy_f32",
    "bind_python",
    "bind_reference",
    "check_kdloss",
    "import_torch",
    "machine_info",
    "make_case",
    "probe_limits",
    "render_table",
    "run",
    "run_interleaved",
    "sample_cost_s",
    "time_task",
    "torch_binder",
    "torch_objective",
    "wait_for_quiet",
    "wait_until_idle",
    "warm_up",
]

TEMPERATURE = 2.0
ALPHA = 0.5
SEED = 0
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((64, 1000), (256, 32000), (8, 128256), (4096, 10))
MODES = ("forward_backward", "forward")
MODE_TITLES = {
    "forward_backward": "forward + backward (loss and gradient)",
    "forward": "forward (loss only)",
}
LOSS_RTOL = 1e-5
GRAD_TOL = 1e-5
# Least memory traffic of one call, bytes per element of float32 logits: the loss reads the
# student and the teacher; with the gradient it also writes one array of the student's size.
LOSS_BYTES = {"forward_backward": 12, "forward": 8}
# Least exps per element at T = 2, with or without the gradient: exp(s/T) and exp(t/T); the
# cross-entropy's exp(s) is exp(s/T) squared (the integer-temperature shortcut).
LOSS_EXPS = {"forward_backward": 2, "forward": 2}
BANDWIDTH_MEGABYTES = 256

Call = Callable[[], float]
# A timed callable whose result is only checked, never used in the timing.
Timed = Callable[[], Any]


class BenchError(Exception):
    """A condition that ends the benchmark with a message and a non-zero exit status."""


@dataclass(frozen=True)
class Settings:
    """How much to measure: a time budget per (implementation, mode, shape), or fixed counts."""

    budget_s: float
    min_reps: int
    max_reps: int
    warmup_s: float
    repeat: int | None
    python_cutoff_s: float


@dataclass
class Case:
    """One shape's synthetic inputs."""

    rows: int
    classes: int
    student: NDArray[np.float32]
    teacher: NDArray[np.float32]
    labels: NDArray[np.int64]

    @property
    def name(self) -> str:
        return f"{self.rows}x{self.classes}"

    @property
    def elements(self) -> int:
        return self.rows * self.classes


@dataclass
class Impl:
    """An implementation: a display name and a way to bind it to a case, outside the timing."""

    key: str
    title: str
    bind: Callable[[Case], dict[str, Call]]
    # Tolerance of its loss against the float64 reference, for a warning (peers only).
    loss_rtol: float


@dataclass
class Timing:
    """Raw timings of one implementation in one mode on one shape."""

    times_s: list[float] = field(default_factory=list)
    # Each sample's first call, timed on its own (see ``Task``).
    first_s: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def first_median_s(self) -> float | None:
        return statistics.median(self.first_s) if self.first_s else None


@dataclass
class ShapeResult:
    """All timings for one shape: ``timings[impl key][mode]``."""

    case: Case
    timings: dict[str, dict[str, Timing]]


# --------------------------------------------------------------------------------------------
# Inputs and implementations


def make_case(rows: int, classes: int, seed: int = SEED) -> Case:
    """Seeded random float32 logits: a teacher and a student correlated with it, and labels."""
    rng = np.random.default_rng([seed, rows, classes])
    teacher = rng.standard_normal((rows, classes), dtype=np.float32)
    teacher *= np.float32(2.0)
    student = rng.standard_normal((rows, classes), dtype=np.float32)
    student += np.float32(0.5) * teacher
    labels = rng.integers(0, classes, size=rows, dtype=np.int64)
    return Case(rows, classes, student, teacher, labels)


def bind_kdloss(case: Case) -> dict[str, Call]:
    loss = kdloss.DistillationLoss(TEMPERATURE, ALPHA)
    s, t, y = case.student, case.teacher, case.labels
    return {
        "forward_backward": lambda: float(loss.forward_backward(s, t, y)[0]),
        "forward": lambda: float(loss.forward(s, t, y)),
    }


def bind_reference(case: Case) -> dict[str, Call]:
    s, t, y = case.student, case.teacher, case.labels
    return {
        "forward_backward": lambda: float(
            reference.distillation_loss_and_grad(s, t, y, temperature=TEMPERATURE, alpha=ALPHA)[0]
        ),
        "forward": lambda: float(
            reference.distillation_loss(s, t, y, temperature=TEMPERATURE, alpha=ALPHA)
        ),
    }


def bind_numpy_f32(case: Case) -> dict[str, Call]:
    s, t, y = case.student, case.teacher, case.labels
    return {
        "forward_backward": lambda: _numpy_f32.distillation_loss_and_grad(
            s, t, y, TEMPERATURE, ALPHA
        )[0],
        "forward": lambda: _numpy_f32.distillation_loss(s, t, y, TEMPERATURE, ALPHA),
    }


def bind_python(case: Case) -> dict[str, Call]:
    # Pure Python works on lists; converting the arrays is not part of what is timed.
    s: list[list[float]] = case.student.tolist()
    t: list[list[float]] = case.teacher.tolist()
    y: list[int] = case.labels.tolist()
    return {
        "forward_backward": lambda: _purepython.distillation_loss_and_grad(
            s, t, y, TEMPERATURE, ALPHA
        )[0],
        "forward": lambda: _purepython.distillation_loss(s, t, y, TEMPERATURE, ALPHA),
    }


def torch_objective(torch: Any) -> Callable[[Any, Any, Any], Any]:
    """The loss as PyTorch users write it: ``F.kl_div`` of two ``log_softmax`` at T, times
    T² and alpha, plus ``(1 - alpha) * F.cross_entropy``."""
    functional = importlib.import_module("torch.nn.functional")

    def objective(s: Any, t: Any, y: Any) -> Any:
        kl = functional.kl_div(
            functional.log_softmax(s / TEMPERATURE, 1),
            functional.log_softmax(t / TEMPERATURE, 1),
            reduction="batchmean",
            log_target=True,
        )
        return kl * TEMPERATURE * TEMPERATURE * ALPHA + (1 - ALPHA) * functional.cross_entropy(s, y)

    return objective


def torch_binder(torch: Any, threads: int | None) -> Callable[[Case], dict[str, Call]]:
    """Bind PyTorch's loss (autograd backward for ``forward_backward``, ``no_grad`` for
    ``forward``) to a case; with ``threads``, ``torch.set_num_threads(threads)`` first."""
    objective = torch_objective(torch)
    if threads is not None:
        torch.set_num_threads(threads)

    def bind(case: Case) -> dict[str, Call]:
        s = torch.from_numpy(case.student).requires_grad_(True)
        t = torch.from_numpy(case.teacher)
        y = torch.from_numpy(case.labels)

        def forward_backward() -> float:
            s.grad = None
            loss = objective(s, t, y)
            loss.backward()
            return float(loss.item())

        def forward() -> float:
            with torch.no_grad():
                return float(objective(s, t, y).item())

        return {"forward_backward": forward_backward, "forward": forward}

    return bind


def import_torch() -> Any | None:
    try:
        return importlib.import_module("torch")
    except Exception:  # an optional peer: a broken install is the same as none
        return None


# --------------------------------------------------------------------------------------------
# Machine description


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int, torch: Any | None) -> dict[str, Any]:
    """Where the numbers come from: platform, CPU, library versions, thread count."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "kdloss_version": kdloss.__version__,
        "threads": threads,
        "torch_version": None if torch is None else str(torch.__version__),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_available"] = len(os.sched_getaffinity(0))
    build_info = getattr(kdloss, "build_info", None)
    if callable(build_info):
        try:
            info["kdloss_build"] = dict(build_info())
        except Exception as exc:  # informational only
            info["kdloss_build"] = {"error": repr(exc)}
    return info


def describe_machine(machine: dict[str, Any]) -> str:
    """One line naming the CPU, the platform and the library versions of ``machine_info``."""
    torch = machine.get("torch_version")
    return (
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, {machine['platform']}; "
        f"Python {machine['python']}, NumPy {machine['numpy_version']}, PyTorch "
        + (
            f"{torch} ({plural(int(machine['threads']), 'thread')})"
            if torch is not None
            else "not installed (pip install torch adds its column)"
        )
    )


def bound_formula(threads: int) -> str:
    """How the ``bound`` column is computed, in words."""
    return (
        f"bound = max(bytes/element x elements / stream bandwidth, exps/element x elements x "
        f"exp cost / {plural(threads, 'thread')}); forward + backward: "
        f"{LOSS_BYTES['forward_backward']} B and {LOSS_EXPS['forward_backward']} exps per "
        f"element, forward: {LOSS_BYTES['forward']} B and {LOSS_EXPS['forward']} exps; "
        f"x bound = kdloss median / bound."
    )


def _machine_cpu_s() -> tuple[float, float] | None:
    """Busy and total CPU seconds of the whole machine since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        ticks = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal; guest time is already in user.
    values = [int(v) for v in fields[1:9]]
    idle = sum(values[3:5])
    return (sum(values) - idle) / ticks, sum(values) / ticks


class LoadMeter:
    """How much of the machine other processes (and the hypervisor) took during a run.

    Shared machines are noisy: a share of more than a few percent means the medians (and
    above all multi-threaded ones) were measured on a machine partly busy with other work.
    """

    def __init__(self) -> None:
        self.machine = _machine_cpu_s()
        self.own = time.process_time()

    def others(self) -> float | None:
        """The share of all CPUs' time used by others since construction (0 to 1), or None."""
        now = _machine_cpu_s()
        if now is None or self.machine is None:
            return None
        busy = now[0] - self.machine[0] - (time.process_time() - self.own)
        total = now[1] - self.machine[1]
        return min(1.0, max(0.0, busy / total)) if total > 0 else None

    def describe(self) -> str:
        share = self.others()
        if share is None:
            return "background load: unknown (no /proc/stat)"
        cpus = os.cpu_count() or 1
        text = f"background load: other processes used {share:.0%} of the {cpus} CPUs' time"
        if share > 0.1:
            text += " (a busy machine: numbers are noisier, multi-threaded ones slower)"
        return text


def wait_for_quiet(
    max_wait_s: float, progress: Progress, *, share: float = 0.05, window_s: float = 1.0
) -> float | None:
    """Wait, up to ``max_wait_s``, for a ``window_s`` in which other processes use less than
    ``share`` of the CPUs; return the last window's share (None without ``/proc/stat``)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = LoadMeter()
        time.sleep(window_s)
        seen = meter.others()
        if seen is None or seen < share or time.monotonic() >= deadline:
            return seen
        progress.update(f"waiting for a quiet machine: other processes use {seen:.0%} of the CPUs")


# --------------------------------------------------------------------------------------------
# Progress on stderr


class Progress:
    """One status line on stderr, rewritten in place on a terminal.

    Elsewhere (a log file, CI) only milestones are printed, one line each.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.width = 0
        self.last = 0.0

    def update(self, text: str, *, milestone: bool = False) -> None:
        """Show ``text`` as the current status (at most ~10 times a second on a terminal)."""
        if not self.live:
            if milestone:
                print(text, file=self.stream, flush=True)
            return
        now = time.monotonic()
        if not milestone and now - self.last < 0.1:
            return
        self.last = now
        # Longer than the terminal, the line would wrap and "\r" could not rewrite it.
        text = text[: max(20, shutil.get_terminal_size().columns - 1)]
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        """Remove the status line."""
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


# --------------------------------------------------------------------------------------------
# Checks


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def rel_error(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-300)


def check_kdloss(cases: Sequence[Case], progress: Progress) -> tuple[float, float]:
    """Compare kdloss with the float64 reference on every case; raise BenchError on mismatch.

    Returns the worst relative loss error and the worst gradient error (max absolute difference
    over max absolute reference gradient).
    """
    loss_fn = kdloss.DistillationLoss(TEMPERATURE, ALPHA)
    worst_loss = 0.0
    worst_grad = 0.0
    for case in cases:
        progress.update(f"checking kdloss against kdloss.reference at {case.name}", milestone=True)
        s, t, y = case.student, case.teacher, case.labels
        ref_loss, ref_grad = reference.distillation_loss_and_grad(
            s, t, y, temperature=TEMPERATURE, alpha=ALPHA
        )
        loss, grad = loss_fn.forward_backward(s, t, y)
        fwd = loss_fn.forward(s, t, y)
        ref = float(ref_loss)
        ref_g = np.asarray(ref_grad, dtype=np.float64)
        got_g = np.asarray(grad, dtype=np.float64)
        if got_g.shape != ref_g.shape:
            raise BenchError(
                f"kdloss gradient has shape {got_g.shape} at {case.name}, expected {ref_g.shape}"
            )
        scale = float(np.max(np.abs(ref_g))) or 1.0
        errors = (rel_error(float(loss), ref), rel_error(float(fwd), ref))
        grad_err = float(np.max(np.abs(got_g - ref_g))) / scale
        if not all(e <= LOSS_RTOL for e in errors) or not grad_err <= GRAD_TOL:
            raise BenchError(
                f"kdloss disagrees with kdloss.reference at {case.name}: loss "
                f"{float(loss)!r} (forward {float(fwd)!r}) vs {ref!r}, relative errors "
                f"{errors[0]:.2e} / {errors[1]:.2e} (limit {LOSS_RTOL:g}); gradient error "
                f"{grad_err:.2e} of max |grad| (limit {GRAD_TOL:g})"
            )
        worst_loss = max(worst_loss, *errors)
        worst_grad = max(worst_grad, grad_err)
    return worst_loss, worst_grad


def calibrate_python(progress: Progress) -> float:
    """Seconds per element of the pure-Python forward + backward, checked against the reference.

    A mismatch is reported as a warning: it concerns the peer, not kdloss.
    """
    progress.update("calibrating pure Python")
    case = make_case(16, 1000)
    bound = bind_python(case)
    # The fastest of three calls: a busy machine should not make the prediction skip shapes.
    runs = [_time_once(bound["forward_backward"]) for _ in range(3)]
    per_element = min(elapsed for elapsed, _ in runs) / case.elements
    loss = runs[0][1]
    ref = float(
        reference.distillation_loss(
            case.student, case.teacher, case.labels, temperature=TEMPERATURE, alpha=ALPHA
        )
    )
    if rel_error(loss, ref) > 1e-9:
        progress.clear()
        print(
            f"warning: pure Python loss {loss!r} differs from the reference {ref!r}",
            file=sys.stderr,
        )
    return per_element


# --------------------------------------------------------------------------------------------
# Timing


@dataclass
class Task:
    """One thing to time, and the times it got.

    ``fn`` is what is timed; ``setup``, when given, runs untimed before every sample (to switch
    thread counts, say). A sample is one call, timed on its own (``first_s``: inputs and code
    as the other tasks left the caches), then ``inner`` back-to-back calls timed together
    (``times_s``, per call: the warm figure, as a loop of calls sees it). ``inner`` > 1 is for
    calls of a few microseconds, where the clock's own cost and resolution would otherwise show.
    """

    name: str
    fn: Timed
    setup: Callable[[], None] | None = None
    inner: int = 1
    times_s: list[float] = field(default_factory=list)
    first_s: list[float] = field(default_factory=list)


def time_task(task: Task) -> tuple[float, float, Any]:
    """One sample of ``task``: seconds of its first call, seconds per warm call, and the value
    of the last call."""
    if task.setup is not None:
        task.setup()
    fn = task.fn
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(task.inner - 1):
        fn()
    value = fn()
    return first, (time.perf_counter() - start) / task.inner, value


def _time_once(fn: Timed) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def sample_cost_s(task: Task, per_call_s: float) -> float:
    """The seconds one sample of ``task`` takes at ``per_call_s`` a call."""
    return per_call_s * (task.inner + 1)


def warm_up(task: Task, budget_s: float) -> tuple[float, Any]:
    """Sample ``task`` until its time settles; return the last warm time (an estimate) and value.

    First calls pay for lazy initialisation and cold caches (PyTorch's first call in a process
    takes about ten times its usual time), so one sample is not enough. Stop when a sample is
    within 25% of the fastest before it, after ``budget_s`` in all, or after 20 samples.
    """
    times: list[float] = []
    spent = 0.0
    while True:
        first, elapsed, value = time_task(task)
        spent += first + elapsed * task.inner
        times.append(elapsed)
        settled = len(times) >= 2 and elapsed <= 1.25 * min(times[:-1])
        if settled or spent >= budget_s or len(times) >= 20:
            return elapsed, value


# How long the process must go without using the CPU before a sample, and the longest wait.
IDLE_WINDOW_S = 0.002
IDLE_LIMIT_S = 0.25


def _other_threads_cpu_s() -> float:
    return time.process_time() - time.thread_time()


def wait_until_idle(window_s: float = IDLE_WINDOW_S, limit_s: float = IDLE_LIMIT_S) -> float:
    """Wait until no other thread of this process is using the CPU; return the seconds waited.

    Worker threads can keep spinning after a call returns: PyTorch's OpenMP threads spin for
    10 to 20 ms after each parallel call, on the cores the next implementation would run on.
    The other threads are idle once their CPU time grows by less than a quarter of
    ``window_s`` over ``window_s``; ``limit_s`` bounds the wait. The calling thread waits
    busy, not asleep: a core that slept finds its caches and clock as a cold call does.
    """
    start = time.monotonic()
    while True:
        cpu = _other_threads_cpu_s()
        window_end = time.monotonic() + window_s
        while time.monotonic() < window_end:
            pass
        waited = time.monotonic() - start
        if _other_threads_cpu_s() - cpu < 0.25 * window_s or waited >= limit_s:
            return waited


def run_interleaved(
    tasks: Sequence[Task],
    estimates: Sequence[float],
    settings: Settings,
    progress: Progress,
    label: str,
) -> None:
    """Sample warmed-up ``tasks`` in interleaved rounds, appending to their ``times_s`` and
    ``first_s``.

    Each task gets enough samples to fill ``settings.budget_s`` at its estimated time per call
    (between ``min_reps`` and ``max_reps``), or exactly ``settings.repeat``. Each round starts
    at a different task, and a task's samples are spread evenly over the rounds, so a slow
    phase of a shared machine hits every task alike. Before each sample the process waits
    until no thread of its own is still busy (``wait_until_idle``), so no implementation is
    timed against the spinning workers of the one before it. The garbage collector is off
    while timing.
    """
    if settings.repeat is not None:
        reps = [settings.repeat] * len(tasks)
    else:
        reps = [
            max(
                settings.min_reps,
                min(settings.max_reps, int(settings.budget_s / max(sample_cost_s(t, e), 1e-9))),
            )
            for t, e in zip(tasks, estimates)
        ]
    rounds = max(reps, default=0)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.monotonic()
    try:
        for r in range(rounds):
            shift = r % max(len(tasks), 1)
            for i in [*range(shift, len(tasks)), *range(shift)]:
                task = tasks[i]
                k = reps[i]
                # Spread each task's k samples evenly over the rounds.
                if (r + 1) * k // rounds == r * k // rounds:
                    continue
                # A call that got much slower than its warm-up (a busy machine) must not
                # stretch the run: past three budgets, the samples so far are enough.
                spent = sum(sample_cost_s(task, t) for t in task.times_s)
                if (
                    settings.repeat is None
                    and len(task.times_s) >= settings.min_reps
                    and spent > 3 * settings.budget_s
                ):
                    continue
                progress.update(
                    f"{label}: round {r + 1}/{rounds}, {task.name} "
                    f"({time.monotonic() - start:.1f} s)"
                )
                wait_until_idle()
                first, elapsed, _ = time_task(task)
                task.first_s.append(first)
                task.times_s.append(elapsed)
    finally:
        if gc_was_enabled:
            gc.enable()


def measure_shape(
    case: Case,
    impls: Sequence[Impl],
    settings: Settings,
    python_s_per_element: float,
    progress: Progress,
    label: str,
) -> ShapeResult:
    """Warm up every (implementation, mode), then time them in interleaved rounds."""
    timings: dict[str, dict[str, Timing]] = {impl.key: {} for impl in impls}
    tasks: list[Task] = []
    owners: list[tuple[str, str]] = []
    estimates: list[float] = []
    ref_loss = float(
        reference.distillation_loss(
            case.student, case.teacher, case.labels, temperature=TEMPERATURE, alpha=ALPHA
        )
    )
    progress.update(f"{label}: warming up and timing", milestone=True)
    for impl in impls:
        if impl.key == "python":
            predicted = python_s_per_element * case.elements
            if predicted > settings.python_cutoff_s:
                reason = f"~{predicted:.0f} s per call"
                for mode in MODES:
                    timings[impl.key][mode] = Timing(skipped=reason)
                continue
        progress.update(f"{label}: preparing {impl.title}")
        calls = impl.bind(case)
        for mode in MODES:
            progress.update(f"{label}: warming up {impl.title} {mode}")
            task = Task(f"{impl.title} {mode}", calls[mode])
            elapsed, value = warm_up(task, settings.warmup_s)
            if impl.key != "kdloss":
                _warn_if_off(impl, mode, case, float(value), ref_loss, progress)
            tasks.append(task)
            owners.append((impl.key, mode))
            estimates.append(elapsed)
    run_interleaved(tasks, estimates, settings, progress, label)
    for (key, mode), task in zip(owners, tasks):
        timings[key][mode] = Timing(task.times_s, task.first_s)
    return ShapeResult(case, timings)


# --------------------------------------------------------------------------------------------
# Lower bound


@dataclass
class Limits:
    """What the machine can do, measured in the run: streaming read bandwidth (GB/s) by thread
    count and the single-thread cost of kdloss's exp (ns per element), every probe kept.

    A call over ``elements`` logits that must move ``bytes_per_element`` bytes each and compute
    ``exps_per_element`` exps each cannot take less than the larger of the two times
    (:meth:`bound_s`). The best probe results are used (highest bandwidth, cheapest exp): a
    busy phase of the machine must not lower the bar.
    """

    bandwidth_gbs: dict[int, list[float]] = field(default_factory=dict)
    exp_ns: list[float] = field(default_factory=list)
    simd: str = ""

    def bandwidth(self, threads: int) -> float:
        """The best streaming read bandwidth measured with ``threads`` threads, in GB/s."""
        return max(self.bandwidth_gbs[threads])

    def exp_cost(self) -> float:
        """The lowest single-thread exp cost measured, ns per element."""
        return min(self.exp_ns)

    def memory_s(self, elements: int, bytes_per_element: int, threads: int) -> float:
        return bytes_per_element * elements / (self.bandwidth(threads) * 1e9)

    def compute_s(self, elements: int, exps_per_element: int, threads: int) -> float:
        return exps_per_element * elements * self.exp_cost() * 1e-9 / threads

    def bound_s(
        self, elements: int, bytes_per_element: int, exps_per_element: int, threads: int
    ) -> float:
        """``max(bytes * elements / bandwidth(threads), exps * elements * exp_cost / threads)``."""
        return max(
            self.memory_s(elements, bytes_per_element, threads),
            self.compute_s(elements, exps_per_element, threads),
        )

    def describe(self, threads: int) -> str:
        """One line: the two figures at ``threads`` threads."""
        return (
            f"stream read {self.bandwidth(threads):.1f} GB/s on {plural(threads, 'thread')} "
            f"(probe_bandwidth, {BANDWIDTH_MEGABYTES} MB), exp {self.exp_cost():.3f} ns/element "
            f"on one thread ({self.simd or 'active SIMD level'}, probe_exp)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bandwidth_gbs": {str(n): v for n, v in sorted(self.bandwidth_gbs.items())},
            "best_bandwidth_gbs": {str(n): max(v) for n, v in sorted(self.bandwidth_gbs.items())},
            "exp_ns": self.exp_ns,
            "best_exp_ns": self.exp_cost() if self.exp_ns else None,
            "bandwidth_megabytes": BANDWIDTH_MEGABYTES,
            "simd": self.simd,
        }


def probe_limits(
    threads: Sequence[int],
    progress: Progress,
    rounds: int = 3,
    limits: Limits | None = None,
) -> Limits:
    """Probe bandwidth at each thread count and the exp cost, ``rounds`` times interleaved,
    adding to ``limits`` when given (probing again after the timing catches a calm phase that
    the first probes missed)."""
    found = Limits() if limits is None else limits
    build = kdloss.build_info()
    found.simd = str(build.get("simd", ""))
    for r in range(rounds):
        for n in threads:
            progress.update(f"probing stream bandwidth on {plural(n, 'thread')} ({r + 1}/{rounds})")
            gbs = float(_core.probe_bandwidth(megabytes=BANDWIDTH_MEGABYTES, threads=n))
            found.bandwidth_gbs.setdefault(n, []).append(gbs)
        progress.update(f"probing exp cost ({r + 1}/{rounds})")
        found.exp_ns.append(float(_core.probe_exp()))
    return found


# --------------------------------------------------------------------------------------------
# Checks of the peers


def _warn_if_off(
    impl: Impl, mode: str, case: Case, loss: float, ref: float, progress: Progress
) -> None:
    err = rel_error(loss, ref)
    if not err <= impl.loss_rtol:
        progress.clear()
        print(
            f"warning: {impl.title} {mode} at {case.name} gives {loss!r}, the reference {ref!r} "
            f"(relative difference {err:.1e})",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------------------------
# Report


def _tiered(value: float, suffix: str = "", small: str = ".2f") -> str:
    """``value`` with fewer decimals as it grows: 0 from 100, 1 from 10, else ``small``."""
    if value >= 100:
        return f"{value:.0f}{suffix}"
    if value >= 10:
        return f"{value:.1f}{suffix}"
    return f"{value:{small}}{suffix}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return _tiered(ms) if ms >= 1 else f"{ms:#.3g}"


def fmt_ns(ns: float) -> str:
    return _tiered(ns)


def fmt_ratio(ratio: float) -> str:
    return _tiered(ratio, "x")


def fmt_bound(ratio: float) -> str:
    """kdloss's time as a multiple of the lower bound."""
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False
) -> str:
    """Rows of cells as aligned text (first column left-aligned, the rest right-aligned, a rule
    under the header) or, with ``markdown``, as a Markdown table."""
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    table = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def peer_cell(theirs: float | None, ours: float | None) -> str:
    """A peer's median (ms) and, in parentheses, how many times faster kdloss is."""
    if theirs is None:
        return "—"
    if ours is None or ours <= 0:
        return fmt_ms(theirs)
    return f"{fmt_ms(theirs)} ({fmt_ratio(theirs / ours)})"


def loss_bound_s(limits: Limits, elements: int, mode: str, threads: int) -> float:
    """The lower bound of one loss call (``mode``) over ``elements`` logits on ``threads``."""
    return limits.bound_s(elements, LOSS_BYTES[mode], LOSS_EXPS[mode], threads)


def format_table(
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    mode: str,
    limits: Limits | None = None,
    threads: int = 1,
    *,
    markdown: bool = False,
) -> str:
    """A table of medians (ms) and kdloss's speed-up over each peer; with ``limits``, the lower
    bound of each call and kdloss's time as a multiple of it."""
    peers = [impl for impl in impls if impl.key != "kdloss"]
    header = ["shape", "kdloss", "ns/element"]
    if limits is not None:
        header += ["bound", "x bound"]
    header += [impl.title for impl in peers]
    rows: list[list[str]] = []
    for res in results:
        ours = res.timings["kdloss"][mode].median_s
        row = [res.case.name]
        if ours is None:
            row += ["—", "—"]
        else:
            row += [fmt_ms(ours), fmt_ns(ours * 1e9 / res.case.elements)]
        if limits is not None:
            bound = loss_bound_s(limits, res.case.elements, mode, threads)
            row += [fmt_ms(bound), "—" if ours is None else fmt_bound(ours / bound)]
        for impl in peers:
            row.append(peer_cell(res.timings[impl.key][mode].median_s, ours))
        rows.append(row)
    return render_table(header, rows, markdown=markdown)


def to_json(
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    machine: dict[str, Any],
    config: dict[str, Any],
    check: dict[str, Any],
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Everything measured: raw times, medians and speed-ups per shape, mode and implementation,
    and the lower bounds with the probes they come from."""
    threads = int(config.get("threads", 1))
    shapes = []
    for res in results:
        per_impl: dict[str, Any] = {}
        for impl in impls:
            per_mode: dict[str, Any] = {}
            for mode in MODES:
                timing = res.timings[impl.key][mode]
                med = timing.median_s
                first = timing.first_median_s
                ours = res.timings["kdloss"][mode].median_s
                per_mode[mode] = {
                    "times_s": timing.times_s,
                    "median_ms": None if med is None else med * 1e3,
                    "first_call_times_s": timing.first_s,
                    "first_call_median_ms": None if first is None else first * 1e3,
                    "ns_per_element": None if med is None else med * 1e9 / res.case.elements,
                    "kdloss_speedup": None if med is None or not ours else med / ours,
                    "skipped": timing.skipped,
                }
            per_impl[impl.key] = {"title": impl.title, **per_mode}
        entry: dict[str, Any] = {
            "shape": [res.case.rows, res.case.classes],
            "elements": res.case.elements,
            "implementations": per_impl,
        }
        if limits is not None:
            bounds = {}
            for mode in MODES:
                bound = loss_bound_s(limits, res.case.elements, mode, threads)
                ours = res.timings["kdloss"][mode].median_s
                bounds[mode] = {
                    "bound_ms": bound * 1e3,
                    "bytes_per_element": LOSS_BYTES[mode],
                    "exps_per_element": LOSS_EXPS[mode],
                    "kdloss_x_of_bound": None if ours is None else ours / bound,
                }
            entry["bound"] = bounds
        shapes.append(entry)
    out = {"machine": machine, "config": config, "check": check, "results": shapes}
    if limits is not None:
        out["limits"] = limits.to_json()
    return out


def load_pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise BenchError(
            "--plot needs matplotlib, an optional extra: pip install 'kdloss[plot]' "
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def write_plot(
    path: str,
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    machine: dict[str, Any],
    limits: Limits | None = None,
) -> None:
    """Save a chart of nanoseconds per element by shape, one line per implementation, and the
    lower bound as a dashed line when ``limits`` are given."""
    plt = load_pyplot()
    fig, axes = plt.subplots(1, len(MODES), figsize=(12, 5), sharey=True)
    names = [r.case.name for r in results]
    markers = "osD^v<>"
    for ax, mode in zip(axes, MODES):
        for n, impl in enumerate(impls):
            # NaN where an implementation was skipped, so that its line breaks there.
            ys = [
                math.nan if med is None else med * 1e9 / res.case.elements
                for res in results
                for med in [res.timings[impl.key][mode].median_s]
            ]
            ax.plot(
                range(len(results)),
                ys,
                marker=markers[n % len(markers)],
                color=f"C{n}",
                linewidth=2.5 if impl.key == "kdloss" else 1.5,
                label=impl.title,
            )
        if limits is not None:
            threads = int(machine["threads"])
            bound_ns = [
                loss_bound_s(limits, res.case.elements, mode, threads) * 1e9 / res.case.elements
                for res in results
            ]
            ax.plot(
                range(len(results)),
                bound_ns,
                linestyle="--",
                color="black",
                linewidth=1.0,
                label="lower bound",
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_xlabel("shape (rows x classes)")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, which="both", axis="y", alpha=0.3)
    axes[0].set_ylabel("time per element, ns (log scale; lower is faster)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(
        f"kdloss {machine['kdloss_version']} and peers: float32, T={TEMPERATURE:g}, "
        f"alpha={ALPHA:g}, {machine['threads']} thread(s); {machine['cpu_model']}",
        fontsize="medium",
    )
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line


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
