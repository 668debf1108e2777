"""The benchmark harness's timing rules (``kdloss.bench.timing``): what a sample calls and
records, and the wait for the process's other threads to go idle. Nothing here times kdloss."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from kdloss.bench import console, timing


def _counter() -> tuple[list[int], timing.Timed]:
    calls = [0]

    def fn() -> int:
        calls[0] += 1
        return calls[0]

    return calls, fn


def test_a_sample_is_one_first_call_then_inner_calls() -> None:
    calls, fn = _counter()
    setups = [0]
    task = timing.Task("count", fn, setup=lambda: setups.__setitem__(0, setups[0] + 1), inner=3)
    timing.time_task(task)
    assert calls[0] == 4
    assert setups[0] == 1
    _, _, value = timing.time_task(task)
    assert value == 8
    assert setups[0] == 2


def test_the_first_call_is_timed_apart_from_the_others() -> None:
    slow_first = [True]

    def fn() -> None:
        if slow_first[0]:
            slow_first[0] = False
            time.sleep(0.02)

    first, per_call, _ = timing.time_task(timing.Task("slow first", fn))
    assert first >= 0.02
    assert per_call < 0.01


def test_interleaved_samples_record_both_times() -> None:
    tasks = []
    for name in ("a", "b", "c"):
        _, fn = _counter()
        tasks.append(timing.Task(name, fn, inner=2))
    settings = timing.Settings(
        budget_s=0.01, min_reps=1, max_reps=10, warmup_s=0.0, repeat=4, python_cutoff_s=1.0
    )
    timing.run_interleaved(tasks, [1e-6] * 3, settings, console.Progress(io.StringIO()), "test")
    for task in tasks:
        assert len(task.times_s) == 4
        assert len(task.first_s) == 4


def test_waiting_for_idle_returns_at_once_when_nothing_else_runs() -> None:
    assert timing.wait_until_idle(window_s=0.002, limit_s=1.0) < 0.5


def _wait_beside_a_busy_thread() -> tuple[float, float]:
    """How long `wait_until_idle` waited while another thread hashed, and how long it hashed."""
    # hashlib releases the GIL for the whole of one long hash (128 MB take about 0.1 s), so
    # this thread keeps a core busy the way a native worker thread does.
    block = bytes(128 << 20)
    started = threading.Event()
    busy_s = [0.0]

    def busy() -> None:
        started.set()
        begun = time.monotonic()
        hashlib.sha256(block).digest()
        busy_s[0] = time.monotonic() - begun

    worker = threading.Thread(target=busy)
    worker.start()
    started.wait()
    begun = time.monotonic()
    # Windows of 20 ms span several scheduler slices, so a loaded machine still shows the
    # thread busy in each.
    waited = timing.wait_until_idle(window_s=0.02, limit_s=5.0)
    worker.join()
    assert time.monotonic() - begun < 5.0
    return waited, busy_s[0]


def test_waiting_for_idle_outlasts_a_busy_thread() -> None:
    # On a machine loaded by other processes the hashing thread can be off its core for a
    # whole window, which looks idle; three tries, of which one must wait out the thread. A
    # wait that never waits fails all three.
    tries = [_wait_beside_a_busy_thread() for _ in range(3)]
    assert all(busy > 0.02 for _, busy in tries)
    assert any(waited >= 0.5 * busy for waited, busy in tries), tries


def test_the_bench_command_writes_warm_and_first_call_times(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdloss",
            "bench",
            "--quick",
            "--shapes",
            "8x10",
            "--repeat",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    (result,) = data["results"]
    assert result["shape"] == [8, 10]
    for impl in ("kdloss", "reference", "numpy_f32", "python"):
        for mode in ("forward_backward", "forward"):
            entry = result["implementations"][impl][mode]
            assert len(entry["times_s"]) == 3
            assert len(entry["first_call_times_s"]) == 3
            assert entry["median_ms"] > 0
            assert entry["first_call_median_ms"] > 0


def test_each_bench_module_imports_alone_without_the_optional_peers() -> None:
    # A fresh interpreter per module: an import cycle fails for one of the orders, and a
    # module that imported matplotlib, scipy or torch at the top would show in sys.modules.
    for name in ("console", "timing", "machine", "workloads", "report", "plot", "cli"):
        code = (
            f"import sys, kdloss.bench.{name}; "
            "print(sorted({'matplotlib', 'scipy', 'torch'} & set(sys.modules)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", name
