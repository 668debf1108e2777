"""How a sample is taken: one call timed on its own, then warm calls; warm-up until the time
settles; interleaved rounds over many tasks; and the wait, before each sample, for the
process's other threads to go idle."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from .console import Progress

__all__ = [
    "IDLE_LIMIT_S",
    "IDLE_WINDOW_S",
    "Settings",
    "Task",
    "Timed",
    "run_interleaved",
    "sample_cost_s",
    "time_once",
    "time_task",
    "wait_until_idle",
    "warm_up",
]

# A timed callable whose result is only checked, never used in the timing.
Timed = Callable[[], Any]


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


def time_once(fn: Timed) -> tuple[float, Any]:
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
