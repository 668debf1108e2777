"""The kdloss benchmark suite: kdloss against the tools people would use instead.

Run by hand, never by the tests::

    python benches/suite.py                          # everything, ~4 minutes on 2 cores
    python benches/suite.py --quick                  # a smoke run, well under a minute
    python benches/suite.py --json suite.json --markdown BENCHMARKS.md

On seeded synthetic float32 logits (T = 2, alpha = 0.5) it measures, at 1 and 2 threads
(``kdloss.set_num_threads`` and ``torch.set_num_threads`` alike):

- ``loss``: the distillation loss with its gradient (``DistillationLoss.forward_backward``)
  and without (``forward``) at (64, 1000), (256, 32000), (8, 128256) and (4096, 10), against
  the NumPy float64 reference (``kdloss.reference``), the hand-written NumPy float32
  formulation (``kdloss._numpy_f32``), pure Python (``kdloss._purepython``, small shapes only)
  and PyTorch (``F.kl_div`` + ``F.cross_entropy``, autograd) when ``import torch`` works,
  and then also kdloss's ``torch.nn.Module`` (``kdloss.torch.DistillationLoss``, autograd);
- ``kernels``: ``kdloss.softmax``, ``log_softmax`` (T = 1), ``cross_entropy`` and
  ``kl_divergence`` (T = 2) at the same shapes, against ``scipy.special`` (``softmax``,
  ``log_softmax``, ``logsumexp``, ``rel_entr``) when scipy imports, NumPy float32 and PyTorch;
- ``scaling``: kdloss's and PyTorch's forward + backward at each thread count, interleaved
  call by call, and the speed-up over the first thread count;
- ``tiny``: the cost of one call at (8, 10), in microseconds.

Every timing is a median of interleaved samples (``kdloss.bench.timing.run_interleaved``): all
implementations of one shape take turns, so a slow phase of a shared machine hits them alike,
and each ratio compares two medians of the same run. A sample is two calls, and the tables
report the second, which runs as a call in a loop does; the first call, timed on its own, finds
the caches as the other implementations left them, and the first-call table reports it for the
loss with its gradient. Before each sample the process waits until none of its threads is busy
(PyTorch's OpenMP workers spin for 10 to 20 ms after each call).

The roofline columns put kdloss next to a lower bound per call, ``max(bytes/element x
elements / stream bandwidth, exps/element x elements x exp cost / threads)``, from
``kdloss._core.probe_bandwidth`` (256 MB, at the thread count) and ``kdloss._core.probe_exp``
(one thread), both measured in the same run, before and after the timings; the best figures
are used. The last table checks kdloss's performance targets against what was measured.

``--markdown FILE`` writes the tables as Markdown. If FILE already holds the markers
``<!-- suite.py:begin -->`` and ``<!-- suite.py:end -->``, only the text between them is
replaced, so ``--markdown BENCHMARKS.md`` regenerates that document's tables in place.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import kdloss
import numpy as np
from kdloss import reference
from kdloss.bench import cli, console, machine, report, timing, workloads
from numpy.typing import NDArray

T = workloads.TEMPERATURE
ALPHA = workloads.ALPHA
DEFAULT_THREADS = (1, 2)
SECTIONS = ("loss", "kernels", "scaling", "tiny")
TINY_SHAPE = (8, 10)
BEGIN = "<!-- suite.py:begin -->"
END = "<!-- suite.py:end -->"
# kdloss against the float64 reference; peers get a looser bar and only a warning.
KDLOSS_RTOL = 1e-5
PEER_RTOL = 1e-3
TINY_TARGET_US = 5.0

Timed = Callable[[], Any]


@dataclass(frozen=True)
class Op:
    """A measured operation and the least work one call of it must do per element."""

    key: str
    title: str
    bytes_per_element: int
    exps_per_element: int


LOSS_OPS = (
    Op("forward_backward", "loss + gradient", 12, 2),
    Op("forward", "loss only", 8, 2),
)
KERNEL_OPS = (
    Op("softmax", "softmax", 8, 1),
    Op("log_softmax", "log_softmax", 8, 1),
    Op("cross_entropy", "cross_entropy", 4, 1),
    Op("kl_divergence", "kl_divergence", 8, 2),
)
OPS = {op.key: op for op in (*LOSS_OPS, *KERNEL_OPS)}


@dataclass(frozen=True)
class Impl:
    """An implementation: what it is called and how to bind it to a case (untimed)."""

    key: str
    title: str
    bind: Callable[[workloads.Case], dict[str, Timed]]
    ops: frozenset[str]


@dataclass
class Measured:
    """The timings of one group of interleaved tasks, keyed by ``(op, implementation)``."""

    section: str
    threads: int
    shape: tuple[int, int]
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # The first call of each sample, timed on its own.
    first: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    # The share of the CPUs other processes used while the group was timed.
    load: float | None = None
    # kdloss's exp cost (ns per element, one thread) probed just before and just after the
    # group: how fast the CPU ran meanwhile, which other virtual machines on the same host
    # change without showing up as load here.
    exp_ns: list[float] = field(default_factory=list)

    def median(self, op: str, impl: str) -> float | None:
        times = self.times.get((op, impl))
        return float(np.median(times)) if times else None

    def first_median(self, op: str, impl: str) -> float | None:
        times = self.first.get((op, impl))
        return float(np.median(times)) if times else None

    @property
    def elements(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def name(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}"


# --------------------------------------------------------------------------------------------
# Implementations


def _np_log_softmax(x: NDArray[np.float32]) -> NDArray[np.float32]:
    z = x - x.max(axis=1, keepdims=True)
    out: NDArray[np.float32] = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def _np_softmax(x: NDArray[np.float32]) -> NDArray[np.float32]:
    e: NDArray[np.float32] = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def bind_kdloss(case: workloads.Case) -> dict[str, Timed]:
    s, t, y = case.student, case.teacher, case.labels
    calls: dict[str, Timed] = dict(workloads.bind_kdloss(case))
    calls.update(
        softmax=lambda: kdloss.softmax(s),
        log_softmax=lambda: kdloss.log_softmax(s),
        cross_entropy=lambda: kdloss.cross_entropy(s, y),
        kl_divergence=lambda: kdloss.kl_divergence(s, t, temperature=T),
    )
    return calls


def bind_numpy_f32(case: workloads.Case) -> dict[str, Timed]:
    s, t, y = case.student, case.teacher, case.labels
    rows = np.arange(case.rows)
    inv_t = np.float32(1 / T)

    def kl() -> float:
        log_ps = _np_log_softmax(s * inv_t)
        log_pt = _np_log_softmax(t * inv_t)
        return float(np.sum(np.exp(log_pt) * (log_pt - log_ps)) / np.float32(case.rows))

    calls: dict[str, Timed] = dict(workloads.bind_numpy_f32(case))
    calls.update(
        softmax=lambda: _np_softmax(s),
        log_softmax=lambda: _np_log_softmax(s),
        cross_entropy=lambda: float(-_np_log_softmax(s)[rows, y].mean()),
        kl_divergence=kl,
    )
    return calls


def scipy_binder(special: Any) -> Callable[[workloads.Case], dict[str, Timed]]:
    def bind(case: workloads.Case) -> dict[str, Timed]:
        s, t, y = case.student, case.teacher, case.labels
        rows = np.arange(case.rows)
        inv_t = np.float32(1 / T)

        def kl() -> float:
            p_t = special.softmax(t * inv_t, axis=1)
            p_s = special.softmax(s * inv_t, axis=1)
            return float(special.rel_entr(p_t, p_s).sum() / case.rows)

        return {
            "softmax": lambda: special.softmax(s, axis=1),
            "log_softmax": lambda: special.log_softmax(s, axis=1),
            "cross_entropy": lambda: float(np.mean(special.logsumexp(s, axis=1) - s[rows, y])),
            "kl_divergence": kl,
        }

    return bind


def torch_binder(torch: Any) -> Callable[[workloads.Case], dict[str, Timed]]:
    functional = importlib.import_module("torch.nn.functional")
    bind_loss = workloads.torch_binder(torch, None)

    def bind(case: workloads.Case) -> dict[str, Timed]:
        s = torch.from_numpy(case.student)
        t = torch.from_numpy(case.teacher)
        y = torch.from_numpy(case.labels)

        def kl() -> float:
            loss = functional.kl_div(
                functional.log_softmax(s / T, 1),
                functional.log_softmax(t / T, 1),
                reduction="batchmean",
                log_target=True,
            )
            return float(loss.item())

        calls: dict[str, Timed] = dict(bind_loss(case))
        calls.update(
            softmax=lambda: torch.softmax(s, 1),
            log_softmax=lambda: torch.log_softmax(s, 1),
            cross_entropy=lambda: float(functional.cross_entropy(s, y).item()),
            kl_divergence=kl,
        )
        return calls

    return bind


def _git_revision() -> str | None:
    """The commit of the checkout this file is in, with "+changes" if the sources differ."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "python"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" +changes" if dirty else "") if head else None


def _extension_built() -> str | None:
    """When the compiled module was written: the sources' commit says nothing about a stale
    build."""
    path = getattr(kdloss._core, "__file__", None)
    if not path:
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    except OSError:
        return None


def _import(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception:  # an optional peer: a broken install is the same as none
        return None


# --------------------------------------------------------------------------------------------
# Checks


def _reference_values(case: workloads.Case) -> dict[str, Any]:
    """What every op should give on ``case``, from the float64 reference."""
    s, t, y = case.student, case.teacher, case.labels
    return {
        "forward_backward": float(reference.distillation_loss(s, t, y, temperature=T, alpha=ALPHA)),
        "forward": float(reference.distillation_loss(s, t, y, temperature=T, alpha=ALPHA)),
        "softmax": reference.softmax(s),
        "log_softmax": reference.log_softmax(s),
        "cross_entropy": float(reference.cross_entropy(s, y)),
        "kl_divergence": float(reference.kl_divergence(s, t, temperature=T)),
    }


def _error(value: Any, ref: Any) -> float:
    """Largest absolute difference over the largest absolute reference value."""
    got = np.asarray(value, dtype=np.float64)
    want = np.asarray(ref, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf
    scale = float(np.max(np.abs(want))) or 1.0
    return float(np.max(np.abs(got - want))) / scale


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Suite:
    """What a run measures with, and everything it measured."""

    settings: timing.Settings
    progress: console.Progress
    torch: Any | None
    impls: list[Impl]
    python_rate: float
    wait_s: float = 0.0
    refs: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    groups: list[Measured] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exp_before: float = 0.0
    # Every speed probe of the run (the limits' exp probes included).
    speed_probes: list[float] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.progress.clear()
        print(f"warning: {text}", file=sys.stderr)
        self.warnings.append(text)

    def check_value(
        self, impl: Impl, op: str, case: workloads.Case, value: Any, *, strict: bool = False
    ) -> None:
        err = _error(value, self.refs[(case.rows, case.classes)][op])
        limit = KDLOSS_RTOL if strict else PEER_RTOL
        if err <= limit:
            return
        text = (
            f"{impl.title} {op} at {case.name} is off the reference by {err:.1e} (limit {limit:g})"
        )
        if strict:
            raise console.BenchError(text)
        self.warn(text)

    def start(self, label: str) -> machine.LoadMeter:
        """Wait for a quiet machine if asked to, then start measuring the group's load and
        probe the CPU's speed."""
        if self.wait_s > 0:
            machine.wait_for_quiet(self.wait_s, self.progress)
        self.exp_before = self.wait_for_speed(self.wait_s)
        self.progress.update(f"{label}: warming up", milestone=True)
        return machine.LoadMeter()

    def wait_for_speed(self, max_wait_s: float) -> float:
        """Probe the CPU's speed (kdloss's exp cost, ns per element) until it is within
        `FAST` of the run's best or ``max_wait_s`` has passed; return the last probe. Other
        virtual machines on the host slow the CPU without showing as load here."""
        deadline = time.monotonic() + max_wait_s
        while True:
            probe = float(kdloss._core.probe_exp(SPEED_PROBE_REPS))
            self.speed_probes.append(probe)
            best = min(self.speed_probes)
            if probe <= FAST * best or time.monotonic() >= deadline:
                return probe
            self.progress.update(f"waiting for the CPU: {probe / best:.2f}x its best exp cost")
            time.sleep(0.5)

    def finish(self, group: Measured, meter: machine.LoadMeter) -> Measured:
        group.load = meter.others()
        group.exp_ns = [self.exp_before, float(kdloss._core.probe_exp(SPEED_PROBE_REPS))]
        self.speed_probes.append(group.exp_ns[-1])
        self.groups.append(group)
        return group

    def best_exp_ns(self) -> float | None:
        """The cheapest exp any probe of the run found: the CPU at its fastest."""
        return min(self.speed_probes) if self.speed_probes else None

    def slowdown(self, group: Measured) -> float | None:
        """How much slower than its fastest the CPU ran while ``group`` was timed: the mean
        of the group's two probes over the run's best."""
        best = self.best_exp_ns()
        if best is None or not group.exp_ns:
            return None
        return float(np.mean(group.exp_ns)) / best

    def set_threads(self, n: int) -> None:
        kdloss.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)

    def measure(
        self, section: str, threads: int, case: workloads.Case, ops: Sequence[Op], label: str
    ) -> Measured:
        """Warm up every (op, implementation) of ``case`` and time them all interleaved."""
        group = Measured(section, threads, (case.rows, case.classes))
        tasks: list[timing.Task] = []
        owners: list[tuple[str, str]] = []
        estimates: list[float] = []
        meter = self.start(label)
        for impl in self.impls:
            wanted = [op.key for op in ops if op.key in impl.ops]
            if not wanted:
                continue
            if impl.key == "python":
                # Predicted before binding: converting a large case to lists is itself slow.
                predicted = self.python_rate * case.elements
                if predicted > self.settings.python_cutoff_s:
                    for k in wanted:
                        group.skipped[(k, impl.key)] = f"~{predicted:.1f} s per call"
                    continue
            bound = impl.bind(case)
            for k in wanted:
                fn = bound[k]
                self.progress.update(f"{label}: warming up {impl.title} {k}")
                task = timing.Task(f"{impl.title} {k}", fn)
                elapsed, value = timing.warm_up(task, self.settings.warmup_s)
                self.check_value(impl, k, case, value, strict=impl.key == "kdloss")
                tasks.append(task)
                owners.append((k, impl.key))
                estimates.append(elapsed)
        timing.run_interleaved(tasks, estimates, self.settings, self.progress, label)
        for owner, task in zip(owners, tasks):
            group.times[owner] = task.times_s
            group.first[owner] = task.first_s
        return self.finish(group, meter)

    def measure_scaling(self, threads: Sequence[int], case: workloads.Case, label: str) -> Measured:
        """kdloss's and PyTorch's forward + backward at every thread count, interleaved.

        Before a call at a thread count other than the library's current one, the count is
        switched and one untimed call pays for any new worker threads.
        """
        group = Measured("scaling", 0, (case.rows, case.classes))
        current: dict[str, int] = {}
        tasks: list[timing.Task] = []
        owners: list[tuple[str, str]] = []
        estimates: list[float] = []
        libraries: list[tuple[str, Timed, Callable[[int], None]]] = [
            ("kdloss", workloads.bind_kdloss(case)["forward_backward"], kdloss.set_num_threads)
        ]
        if self.torch is not None:
            libraries.append(
                (
                    "torch",
                    workloads.torch_binder(self.torch, None)(case)["forward_backward"],
                    self.torch.set_num_threads,
                )
            )

        def switcher(
            lib: str, n: int, fn: Timed, set_n: Callable[[int], None]
        ) -> Callable[[], None]:
            def setup() -> None:
                if current.get(lib) != n:
                    set_n(n)
                    current[lib] = n
                    fn()

            return setup

        meter = self.start(label)
        for lib, fn, set_n in libraries:
            for n in threads:
                task = timing.Task(f"{lib} {n} threads", fn, setup=switcher(lib, n, fn, set_n))
                elapsed, _ = timing.warm_up(task, self.settings.warmup_s)
                tasks.append(task)
                owners.append((f"threads={n}", lib))
                estimates.append(elapsed)
        timing.run_interleaved(tasks, estimates, self.settings, self.progress, label)
        for owner, task in zip(owners, tasks):
            group.times[owner] = task.times_s
            group.first[owner] = task.first_s
        return self.finish(group, meter)

    def measure_tiny(self, threads: int, label: str) -> Measured:
        """Microseconds per call at (8, 10): each sample is enough back-to-back calls to take
        about a millisecond, so that the clock's own cost does not show."""
        case = workloads.make_case(*TINY_SHAPE)
        s, t, y = case.student, case.teacher, case.labels
        loss = kdloss.DistillationLoss(T, ALPHA)
        calls: list[tuple[str, str, Timed]] = [
            ("forward", "kdloss", lambda: loss.forward(s, t, y)),
            ("forward_backward", "kdloss", lambda: loss.forward_backward(s, t, y)),
            (
                "function",
                "kdloss",
                lambda: kdloss.distillation_loss(s, t, y, temperature=T, alpha=ALPHA),
            ),
        ]
        for impl in self.impls:
            if impl.key in ("numpy_f32", "python", "torch"):
                bound = impl.bind(case)
                calls += [(mode, impl.key, bound[mode]) for mode in ("forward", "forward_backward")]
        group = Measured("tiny", threads, TINY_SHAPE)
        tasks: list[timing.Task] = []
        estimates: list[float] = []
        meter = self.start(label)
        for mode, key, fn in calls:
            task = timing.Task(f"{key} {mode}", fn)
            single, _ = timing.warm_up(task, self.settings.warmup_s)
            task.inner = max(1, min(10_000, int(1e-3 / max(single, 1e-9))))
            elapsed, _ = timing.warm_up(task, self.settings.warmup_s)
            tasks.append(task)
            estimates.append(elapsed)
        timing.run_interleaved(tasks, estimates, self.settings, self.progress, label)
        for (mode, key, _), task in zip(calls, tasks):
            group.times[(mode, key)] = task.times_s
            group.first[(mode, key)] = task.first_s
        return self.finish(group, meter)


# --------------------------------------------------------------------------------------------
# Tables


@dataclass
class Table:
    title: str
    note: str
    header: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        return f"{self.title}\n{self.note}\n{report.render_table(self.header, self.rows)}"

    def markdown(self) -> str:
        table = report.render_table(self.header, self.rows, markdown=True)
        return f"#### {self.title}\n\n{self.note}\n\n{table}"

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note, "header": self.header, "rows": self.rows}


BUSY = 0.1
# A group timed while the CPU ran this much slower than its fastest in the run is named.
SLOW = 1.2
SPEED_PROBE_REPS = 5
# With --wait-quiet, a group starts once the CPU is within this factor of its best speed.
FAST = 1.15


def _group_name(g: Measured) -> str:
    return f"{g.name}{'' if g.section == 'scaling' else f' {g.threads}t'}"


def _busy_note(suite: Suite, groups: Sequence[Measured]) -> str:
    """Sentences naming the groups timed while other processes were using the CPUs, or while
    the CPU itself ran slow."""
    note = ""
    busy = [(g, g.load) for g in groups if g.load is not None and g.load > BUSY]
    if busy:
        named = ", ".join(f"{_group_name(g)} ({load:.0%})" for g, load in busy)
        note += f" Timed while other processes used more than {BUSY:.0%} of the CPUs: {named}."
    slow = [(g, x) for g in groups if (x := suite.slowdown(g)) is not None and x > SLOW]
    if slow:
        named = ", ".join(f"{_group_name(g)} ({x:.2f}x)" for g, x in slow)
        note += (
            " Timed while the CPU ran slower than at its fastest in this run (kdloss's exp "
            f"probed before and after each group, against the best probe): {named}."
        )
    return note


def _peers(impls: Sequence[Impl], keys: Sequence[str]) -> list[Impl]:
    return [impl for impl in impls if impl.key in keys]


def _roofline_cells(
    limits: machine.Limits, group: Measured, op: Op, ours: float | None
) -> list[str]:
    bound = limits.bound_s(group.elements, op.bytes_per_element, op.exps_per_element, group.threads)
    return [report.fmt_ms(bound), "—" if ours is None else report.fmt_bound(ours / bound)]


def _ours_cells(group: Measured, ours: float | None) -> list[str]:
    if ours is None:
        return ["—", "—"]
    return [report.fmt_ms(ours), report.fmt_ns(ours * 1e9 / group.elements)]


def loss_table(suite: Suite, limits: machine.Limits, threads: int, op: Op) -> Table:
    peers = _peers(suite.impls, ("reference", "numpy_f32", "python", "torch", "kdloss_torch"))
    header = ["shape", "kdloss ms", "ns/element", "bound ms", "x bound", *[p.title for p in peers]]
    rows = []
    groups = [g for g in suite.groups if g.section == "loss" and g.threads == threads]
    for g in groups:
        ours = g.median(op.key, "kdloss")
        row = [g.name, *_ours_cells(g, ours), *_roofline_cells(limits, g, op, ours)]
        for p in peers:
            skipped = g.skipped.get((op.key, p.key))
            row.append("—" if skipped else report.peer_cell(g.median(op.key, p.key), ours))
        rows.append(row)
    title = f"Distillation loss, {op.title} (`{op.key}`), {console.plural(threads, 'thread')}"
    note = (
        "Median ms per call; in parentheses, how many times faster kdloss is. "
        f"bound: {op.bytes_per_element} B and {op.exps_per_element} exps per element; "
        "x bound = kdloss / bound. — : not run (pure Python is skipped above ~0.5 s a call)."
    )
    return Table(title, note + _busy_note(suite, groups), header, rows)


def first_call_table(suite: Suite, op: Op) -> Table:
    """The loss tables' first calls: each timed on its own, right after the other
    implementations' calls, with the caches as they left them."""
    peers = _peers(suite.impls, ("reference", "numpy_f32", "python", "torch", "kdloss_torch"))
    header = ["shape", "threads", "kdloss ms", "ns/element", *[p.title for p in peers]]
    rows = []
    groups = [g for g in suite.groups if g.section == "loss"]
    for g in sorted(groups, key=lambda g: g.threads):
        ours = g.first_median(op.key, "kdloss")
        row = [g.name, str(g.threads), *_ours_cells(g, ours)]
        for p in peers:
            skipped = g.skipped.get((op.key, p.key))
            row.append("—" if skipped else report.peer_cell(g.first_median(op.key, p.key), ours))
        rows.append(row)
    note = (
        "Median ms of the first call of each sample, which follows the other implementations' "
        "calls (pure Python's leave nothing of kdloss's inputs in cache); in parentheses, how "
        "many times faster kdloss is. The loss tables above time the second call."
    )
    title = f"Distillation loss, {op.title} (`{op.key}`), first calls"
    return Table(title, note + _busy_note(suite, groups), header, rows)


def kernel_table(suite: Suite, limits: machine.Limits, threads: int) -> Table:
    peers = _peers(suite.impls, ("scipy", "numpy_f32", "torch"))
    header = [
        "kernel",
        "shape",
        "kdloss ms",
        "ns/element",
        "bound ms",
        "x bound",
        *[p.title for p in peers],
    ]
    rows = []
    groups = [g for g in suite.groups if g.section == "kernels" and g.threads == threads]
    for op in KERNEL_OPS:
        for g in groups:
            ours = g.median(op.key, "kdloss")
            row = [op.title, g.name, *_ours_cells(g, ours), *_roofline_cells(limits, g, op, ours)]
            row += [report.peer_cell(g.median(op.key, p.key), ours) for p in peers]
            rows.append(row)
    note = (
        "Median ms per call; in parentheses, how many times faster kdloss is. softmax and "
        "log_softmax at T = 1 return a new (B, C) array; cross_entropy and kl_divergence (T = 2) "
        "return the mean. bound: softmax and log_softmax 8 B and 1 exp per element, "
        "cross_entropy 4 B and 1 exp, kl_divergence 8 B and 2 exps."
    )
    title = f"Standalone kernels, {console.plural(threads, 'thread')}"
    return Table(title, note + _busy_note(suite, groups), header, rows)


def scaling_table(suite: Suite, threads: Sequence[int]) -> Table:
    libs = ["kdloss"] + (["torch"] if suite.torch is not None else [])
    titles = {"kdloss": "kdloss", "torch": "PyTorch"}
    header = ["shape"]
    for lib in libs:
        header += [f"{titles[lib]} {n}t ms" for n in threads]
        header += [f"{titles[lib]} {n}t/{threads[0]}t" for n in threads[1:]]
    rows = []
    groups = [g for g in suite.groups if g.section == "scaling"]
    for g in groups:
        row = [g.name]
        for lib in libs:
            meds = [g.median(f"threads={n}", lib) for n in threads]
            row += ["—" if m is None else report.fmt_ms(m) for m in meds]
            for m in meds[1:]:
                base = meds[0]
                row.append("—" if m is None or base is None else f"{base / m:.2f}x")
        rows.append(row)
    note = (
        "Forward + backward, median ms; each thread count's calls interleaved with the others'. "
        f"Nt/{threads[0]}t: speed-up over {console.plural(threads[0], 'thread')}."
    )
    note += _busy_note(suite, groups)
    return Table("Thread scaling (forward + backward)", note, header, rows)


def tiny_table(suite: Suite) -> Table:
    group = next(g for g in suite.groups if g.section == "tiny")
    titles = {
        ("forward", "kdloss"): "kdloss DistillationLoss.forward",
        ("forward_backward", "kdloss"): "kdloss DistillationLoss.forward_backward",
        ("function", "kdloss"): "kdloss.distillation_loss (function)",
    }
    for impl in suite.impls:
        for mode in ("forward", "forward_backward"):
            titles.setdefault((mode, impl.key), f"{impl.title} {mode}")
    rows = []
    for key in group.times:
        med = group.median(*key)
        rows.append([titles[key], "—" if med is None else f"{med * 1e6:.2f}"])
    note = (
        f"{TINY_SHAPE[0]}x{TINY_SHAPE[1]} float32, median µs per call "
        f"({console.plural(group.threads, 'thread')} configured; calls this small run on the "
        "calling thread)."
    ) + _busy_note(suite, [group])
    return Table("Tiny calls", note, ["call", "µs"], rows)


@dataclass
class Target:
    what: str
    wanted: str
    measured: str
    passed: bool | None
    # For a speed-up over a peer: the peer's time over the bound, the most any implementation
    # could reach on this machine.
    ceiling: str = "—"


def targets(suite: Suite, limits: machine.Limits, threads: Sequence[int]) -> list[Target]:
    """The performance targets, judged on this run's medians."""
    found: list[Target] = []
    fb = "forward_backward"
    for g in suite.groups:
        if g.section != "loss":
            continue
        ours = g.median(fb, "kdloss")
        op = OPS[fb]
        bound = limits.bound_s(g.elements, op.bytes_per_element, op.exps_per_element, g.threads)
        need = 5.0 if g.shape == (4096, 10) else None
        for peer, title, default_need in (
            ("torch", "PyTorch", 10.0),
            ("numpy_f32", "NumPy f32", 15.0),
        ):
            theirs = g.median(fb, peer)
            want = need or default_need
            if theirs is None or ours is None:
                continue
            ratio = theirs / ours
            found.append(
                Target(
                    f"fwd+bwd {g.name}, {console.plural(g.threads, 'thread')}: vs {title}",
                    f">= {want:g}x",
                    f"{ratio:.2f}x",
                    ratio >= want,
                    f"{theirs / bound:.1f}x",
                )
            )
        if g.shape == (256, 32000) and g.threads == 2 and ours is not None:
            found.append(
                Target(
                    "fwd+bwd 256x32000, 2 threads: within 2x of the bound",
                    "<= 2.00x bound",
                    f"{ours / bound:.2f}x ({report.fmt_ms(ours)} / {report.fmt_ms(bound)} ms)",
                    ours / bound <= 2.0,
                )
            )
    for g in suite.groups:
        if g.section == "scaling" and g.shape == (256, 32000) and 1 in threads and 2 in threads:
            one, two = g.median("threads=1", "kdloss"), g.median("threads=2", "kdloss")
            if one is not None and two is not None:
                found.append(
                    Target(
                        "fwd+bwd 256x32000: 2 threads over 1 thread",
                        ">= 1.60x",
                        f"{one / two:.2f}x",
                        one / two >= 1.6,
                    )
                )
    for g in suite.groups:
        if g.section == "tiny":
            med = g.median("forward", "kdloss")
            if med is not None:
                found.append(
                    Target(
                        "tiny 8x10 forward (DistillationLoss.forward)",
                        f"a few µs (<= {TINY_TARGET_US:g})",
                        f"{med * 1e6:.2f} µs",
                        med * 1e6 <= TINY_TARGET_US,
                    )
                )
    return found


def targets_table(found: Sequence[Target]) -> Table:
    rows = [
        [
            t.what,
            t.wanted,
            t.measured,
            "—" if t.passed is None else ("pass" if t.passed else "FAIL"),
            t.ceiling,
        ]
        for t in found
    ]
    note = (
        "Forward + backward float32, T = 2, alpha = 0.5; peers at the same thread count. "
        "'at the bound': the peer's time over the lower bound, the speed-up a kernel running "
        "exactly at the bound would show (a target above it cannot be met on this machine)."
    )
    header = ["target", "wanted", "measured", "result", "at the bound"]
    return Table("Targets", note, header, rows)


# --------------------------------------------------------------------------------------------
# Output


def _load_line(suite: Suite, run: machine.LoadMeter) -> str:
    """How busy the machine was with other work while the groups were timed, and how fast the
    CPU ran."""
    loads = sorted(g.load for g in suite.groups if g.load is not None)
    if not loads:
        return run.describe()
    busy = sum(x > BUSY for x in loads)
    line = (
        f"background load while timing: other processes used {np.median(loads):.0%} of the CPUs "
        f"in the median group, {loads[-1]:.0%} at most; {busy} of {len(loads)} groups above "
        f"{BUSY:.0%} (named under their tables)"
    )
    slowdowns = sorted(x for g in suite.groups if (x := suite.slowdown(g)) is not None)
    best = suite.best_exp_ns()
    if slowdowns and best is not None:
        slow = sum(x > SLOW for x in slowdowns)
        line += (
            f"; CPU speed: kdloss's exp probed around each group cost {best:.3f} ns/element at "
            f"best, {np.median(slowdowns):.2f}x that in the median group and "
            f"{slowdowns[-1]:.2f}x at worst; {slow} of {len(slowdowns)} groups above "
            f"{SLOW:.1f}x (named under their tables)"
        )
    return line


def _markdown(tables: Sequence[Table], header: Sequence[str]) -> str:
    parts = [BEGIN, "", *[f"- {line}" for line in header], ""]
    for table in tables:
        parts += [table.markdown(), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def write_markdown(path: str, text: str) -> str:
    """Write ``text`` to ``path``, or splice it between the markers if ``path`` has them."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        before = old[: old.index(BEGIN)]
        after = old[old.index(END) + len(END) :].lstrip("\n")
        new = before + text + ("\n" + after if after else "")
        how = "replaced the tables in"
    else:
        new = text
        how = "wrote"
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return how


def _groups_json(groups: Sequence[Measured]) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        for (op, impl), times in g.times.items():
            med = g.median(op, impl)
            out.append(
                {
                    "section": g.section,
                    "threads": g.threads,
                    "shape": list(g.shape),
                    "op": op,
                    "impl": impl,
                    "times_s": times,
                    "median_s": med,
                    "first_call_times_s": g.first.get((op, impl), []),
                    "first_call_median_s": g.first_median(op, impl),
                    "background_load": g.load,
                    "exp_probe_ns": g.exp_ns,
                }
            )
        for (op, impl), why in g.skipped.items():
            out.append(
                {
                    "section": g.section,
                    "threads": g.threads,
                    "shape": list(g.shape),
                    "op": op,
                    "impl": impl,
                    "skipped": why,
                }
            )
    return out


# --------------------------------------------------------------------------------------------
# Command line


def _thread_list(text: str) -> list[int]:
    values = [cli.positive_int(p) for p in text.split(",") if p.strip()]
    if not values:
        raise argparse.ArgumentTypeError("no thread count given")
    return values


def _sections(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in SECTIONS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(
            f"sections are a comma-separated subset of {','.join(SECTIONS)}, got {text!r}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benches/suite.py",
        description=(
            "The kdloss benchmark suite: the loss, its gradient and the standalone kernels "
            "against NumPy, scipy, pure Python and PyTorch, at 1 and 2 threads, with a roofline "
            "column. Progress goes to stderr, tables to stdout."
        ),
    )
    parser.add_argument(
        "--threads",
        type=_thread_list,
        default=list(DEFAULT_THREADS),
        metavar="N[,N...]",
        help="thread counts for kdloss and PyTorch; default: 1,2",
    )
    parser.add_argument(
        "--shapes",
        type=cli.parse_shapes,
        default=list(workloads.DEFAULT_SHAPES),
        metavar="BxC[,BxC...]",
        help="shapes (rows x classes); default: 64x1000,256x32000,8x128256,4096x10",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=list(SECTIONS),
        metavar="S[,S...]",
        help=f"which parts to run, of {','.join(SECTIONS)}; default: all",
    )
    parser.add_argument(
        "--repeat", type=cli.positive_int, metavar="K", help="exactly K samples per task"
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each group, wait up to SECONDS for other processes to leave the CPUs "
        "(under 5%% for a second), and as long again for the CPU to run within 15%% of its "
        "fastest in the run (kdloss's exp probe); for shared machines. Default: 0, no waiting",
    )
    parser.add_argument("--json", metavar="FILE", help="write every raw timing and the tables")
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="write the tables as Markdown (between the suite.py markers if FILE has them)",
    )
    return parser.parse_args(argv)


def _settings(quick: bool, repeat: int | None) -> timing.Settings:
    if quick:
        return timing.Settings(
            budget_s=0.06,
            min_reps=3,
            max_reps=20,
            warmup_s=0.15,
            repeat=repeat,
            python_cutoff_s=0.2,
        )
    return timing.Settings(
        budget_s=0.4, min_reps=5, max_reps=200, warmup_s=0.5, repeat=repeat, python_cutoff_s=0.5
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = sys.stdout if out is None else out
    try:
        return _main(parse_args(argv), stream, argv)
    except console.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace, out: TextIO, argv: Sequence[str] | None) -> int:
    started = time.monotonic()
    load = machine.LoadMeter()
    threads: list[int] = args.threads
    shapes: list[tuple[int, int]] = args.shapes
    sections: list[str] = args.sections
    settings = _settings(bool(args.quick), args.repeat)
    progress = console.Progress(sys.stderr)
    torch = None if args.no_torch else workloads.import_torch()
    special = _import("scipy.special")

    loss_ops = frozenset(op.key for op in LOSS_OPS)
    kernel_ops = frozenset(op.key for op in KERNEL_OPS)
    impls = [
        Impl("kdloss", "kdloss", bind_kdloss, loss_ops | kernel_ops),
        Impl(
            "reference",
            "NumPy f64 reference",
            lambda c: dict(workloads.bind_reference(c)),
            loss_ops,
        ),
        Impl("numpy_f32", "NumPy f32", bind_numpy_f32, loss_ops | kernel_ops),
        Impl("python", "pure Python", lambda c: dict(workloads.bind_python(c)), loss_ops),
    ]
    if special is not None:
        impls.append(Impl("scipy", "scipy.special", scipy_binder(special), kernel_ops))
    if torch is not None:
        impls.append(Impl("torch", "PyTorch", torch_binder(torch), loss_ops | kernel_ops))
        # The same loss through kdloss's torch.nn.Module, autograd and all.
        module = importlib.import_module("kdloss.torch").DistillationLoss(T, ALPHA)
        bind_module = workloads.torch_binder(torch, None, module)
        impls.append(Impl("kdloss_torch", "kdloss.torch", lambda c: dict(bind_module(c)), loss_ops))

    info = machine.machine_info(max(threads), torch)
    info["threads"] = threads
    info["scipy_version"] = getattr(_import("scipy"), "__version__", None)
    info["git_revision"] = _git_revision()
    info["extension"] = _extension_built()
    command = " ".join(["python benches/suite.py", *(sys.argv[1:] if argv is None else argv)])
    build = info.get("kdloss_build", {})
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    versions.append(
        "scipy not installed" if info["scipy_version"] is None else f"scipy {info['scipy_version']}"
    )
    versions.append(
        "PyTorch not installed"
        if torch is None
        else f"PyTorch {info['torch_version']} (same threads as kdloss)"
    )
    header = [
        f"kdloss {info['kdloss_version']}"
        + (f" (source {info['git_revision']})" if info["git_revision"] else "")
        + (f" (extension built {info['extension']})" if info["extension"] else "")
        + f" suite: float32, T={T:g}, alpha={ALPHA:g}; "
        f"threads {','.join(map(str, threads))}; SIMD {build.get('simd', '?')} "
        f"(available: {', '.join(build.get('simd_available', []))}); "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine: {info['cpu_model']}, {info['cpu_count']} CPUs, {info['platform']}; "
        + ", ".join(versions),
        f"command: {command}",
    ]
    for line in header:
        print(line, file=out)
    out.flush()

    cases = [workloads.make_case(b, c) for b, c in shapes]
    suite = Suite(settings, progress, torch, impls, 0.0, wait_s=max(0.0, args.wait_quiet))
    # kdloss against the float64 reference, before anything is timed.
    worst_loss, worst_grad = workloads.check_kdloss(cases, progress)
    for case in cases:
        suite.refs[(case.rows, case.classes)] = _reference_values(case)
    if "loss" in sections:
        suite.python_rate = workloads.calibrate_python(progress)
    limits = machine.probe_limits(threads, progress, rounds=1 if args.quick else 3)
    suite.speed_probes.extend(limits.exp_ns)

    n_groups = len(threads) * len(cases) * sum(s in sections for s in ("loss", "kernels"))
    done = 0
    for n in threads:
        suite.set_threads(n)
        for case in cases:
            for section, ops in (("loss", LOSS_OPS), ("kernels", KERNEL_OPS)):
                if section not in sections:
                    continue
                done += 1
                label = f"[{done}/{n_groups}] {section} {case.name} {console.plural(n, 'thread')}"
                suite.measure(section, n, case, ops, label)
    if "scaling" in sections and len(threads) > 1:
        for k, case in enumerate(cases):
            suite.measure_scaling(threads, case, f"[scaling {k + 1}/{len(cases)}] {case.name}")
    if "tiny" in sections:
        suite.set_threads(max(threads))
        suite.measure_tiny(max(threads), "[tiny] 8x10")
    machine.probe_limits(threads, progress, rounds=1 if args.quick else 2, limits=limits)
    progress.clear()

    tables: list[Table] = []
    for n in threads:
        if "loss" in sections:
            tables += [loss_table(suite, limits, n, op) for op in LOSS_OPS]
        if "kernels" in sections:
            tables.append(kernel_table(suite, limits, n))
    if "loss" in sections:
        tables.append(first_call_table(suite, OPS["forward_backward"]))
    if "scaling" in sections and len(threads) > 1:
        tables.append(scaling_table(suite, threads))
    if "tiny" in sections:
        tables.append(tiny_table(suite))
    found = targets(suite, limits, threads)
    if found:
        tables.append(targets_table(found))

    elapsed = time.monotonic() - started
    summary = [
        f"check: kdloss matches kdloss.reference on {console.plural(len(cases), 'shape')} "
        f"(loss within {worst_loss:.1e} relative, gradient within {worst_grad:.1e} of max "
        f"|grad|; kernels within {KDLOSS_RTOL:g})",
        "limits: "
        + "; ".join(
            f"stream read {limits.bandwidth(n):.1f} GB/s on {console.plural(n, 'thread')}"
            for n in threads
        )
        + f"; exp {limits.exp_cost():.3f} ns/element on one thread "
        f"(best of {len(limits.exp_ns)} probes each)",
        f"timing: medians of interleaved samples ({settings.min_reps} to "
        f"{settings.max_reps} per task, or {settings.budget_s:g} s of calls), each the second "
        "of two calls, after waiting for the process to be idle; "
        f"{elapsed:.0f} s in all",
        _load_line(suite, load),
    ]
    for line in summary:
        print(line, file=out)
    for table in tables:
        print(file=out)
        print(table.text(), file=out)
    out.flush()

    if args.json is not None:
        data = {
            "machine": info,
            "command": command,
            "config": {
                "temperature": T,
                "alpha": ALPHA,
                "dtype": "float32",
                "seed": workloads.SEED,
                "threads": threads,
                "shapes": [list(s) for s in shapes],
                "sections": sections,
                "settings": vars(settings),
                "elapsed_s": elapsed,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "check": {"worst_loss_rel_error": worst_loss, "worst_grad_error": worst_grad},
            "background_load": load.others(),
            "limits": limits.to_json(),
            "ops": {
                k: {
                    "bytes_per_element": op.bytes_per_element,
                    "exps_per_element": op.exps_per_element,
                }
                for k, op in OPS.items()
            },
            "measurements": _groups_json(suite.groups),
            "tables": [t.to_json() for t in tables],
            "targets": [vars(t) for t in found],
            "warnings": suite.warnings,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}", file=out)
    if args.markdown is not None:
        how = write_markdown(args.markdown, _markdown(tables, [*header, *summary]))
        print(f"{how} {args.markdown}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
