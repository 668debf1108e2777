"""What is measured: the loss settings and shapes, the seeded inputs, the implementations
compared (kdloss, the float64 reference, NumPy float32, pure Python, PyTorch), the check of
kdloss against the reference before any timing, and the timing of one shape."""

from __future__ import annotations

import importlib
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

import kdloss
from kdloss import _numpy_f32, _purepython, reference

from .console import BenchError, Progress
from .timing import Settings, Task, run_interleaved, time_once, warm_up

__all__ = [
    "ALPHA",
    "DEFAULT_SHAPES",
    "GRAD_TOL",
    "LOSS_BYTES",
    "LOSS_EXPS",
    "LOSS_RTOL",
    "MODES",
    "MODE_TITLES",
    "SEED",
    "TEMPERATURE",
    "Call",
    "Case",
    "Impl",
    "ShapeResult",
    "Timing",
    "bind_kdloss",
    "bind_numpy_f32",
    "bind_python",
    "bind_reference",
    "calibrate_python",
    "check_kdloss",
    "import_torch",
    "make_case",
    "measure_shape",
    "rel_error",
    "torch_binder",
    "torch_objective",
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

Call = Callable[[], float]


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
    # Each sample's first call, timed on its own (see ``timing.Task``).
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


def torch_binder(
    torch: Any,
    threads: int | None,
    objective: Callable[[Any, Any, Any], Any] | None = None,
) -> Callable[[Case], dict[str, Call]]:
    """Bind a loss on tensors, by default PyTorch's (:func:`torch_objective`), to a case:
    autograd backward for ``forward_backward``, ``no_grad`` for ``forward``; with ``threads``,
    ``torch.set_num_threads(threads)`` first."""
    if objective is None:
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
    runs = [time_once(bound["forward_backward"]) for _ in range(3)]
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
