"""What the numbers were measured on: platform, CPU and library versions; how busy other
processes kept the machine; and what it can do, probed in the run (streaming read bandwidth,
the cost of kdloss's exp), for the lower bound of a call."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kdloss
from kdloss import _core

from .console import Progress, plural

__all__ = [
    "BANDWIDTH_MEGABYTES",
    "Limits",
    "LoadMeter",
    "cpu_model",
    "describe_machine",
    "machine_info",
    "probe_limits",
    "wait_for_quiet",
]

BANDWIDTH_MEGABYTES = 256


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
