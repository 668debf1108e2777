"""Threads: determinism across pool sizes, the GIL released, concurrent callers, env var."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from helpers import labels, logits

Inputs = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]]


@pytest.fixture(scope="module")
def big_inputs() -> dict[Any, Inputs]:
    """Inputs large enough for the work to be split across threads."""
    rng = np.random.default_rng(7)
    shape = (512, 4000)
    out: dict[Any, Inputs] = {}
    for dtype in (np.float32, np.float64):
        s = logits(rng, shape, dtype)
        t = logits(rng, shape, dtype)
        y = labels(rng, shape[:-1], shape[-1])
        out[dtype] = (s, t, y)
    return out


def _everything(s: Any, t: Any, y: Any) -> list[Any]:
    results: list[Any] = []
    for reduction in ("mean", "sum", "none"):
        loss_fn = kdloss.DistillationLoss(2.0, 0.5, reduction=reduction)
        results.extend(loss_fn.forward_backward(s, t, y))
        results.append(loss_fn(s, t, y))
        results.append(kdloss.kl_divergence(s, t, temperature=2.0, reduction=reduction))
        results.append(kdloss.cross_entropy(s, y, reduction=reduction))
    results.append(kdloss.softmax(s, temperature=2.0))
    results.append(kdloss.log_softmax(s, temperature=2.0))
    return results


def _assert_bitwise_equal(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w)
        g_arr = np.asarray(g)
        w_arr = np.asarray(w)
        assert g_arr.dtype == w_arr.dtype
        assert g_arr.shape == w_arr.shape
        # Compare the bits, so that even -0.0 against 0.0 or a different NaN payload shows.
        assert g_arr.tobytes() == w_arr.tobytes()


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(big_inputs: dict[Any, Inputs], dtype: Any) -> None:
    s, t, y = big_inputs[dtype]
    kdloss.set_num_threads(1)
    want = _everything(s, t, y)
    for n in (2, 3, 1, 4):
        kdloss.set_num_threads(n)
        _assert_bitwise_equal(_everything(s, t, y), want)


@pytest.mark.usefixtures("restore_num_threads")
def test_bitwise_identical_3d_and_many_short_rows() -> None:
    rng = np.random.default_rng(11)
    # The last three are just large enough to ask a pool thread for help, which may join late
    # or not at all: each is repeated, so that helpers arrive at different points.
    shapes = [(64, 16, 500), (200_000, 3), (3, 300_001), (64, 1000), (4096, 10), (48, 1024)]
    for shape in shapes:
        s = logits(rng, shape, np.float32)
        t = logits(rng, shape, np.float32)
        y = labels(rng, shape[:-1], shape[-1])
        kdloss.set_num_threads(1)
        want = kdloss.DistillationLoss(3.0, 0.5).forward_backward(s, t, y)
        for n in (2, 3, 2, 2, 2):
            kdloss.set_num_threads(n)
            got = kdloss.DistillationLoss(3.0, 0.5).forward_backward(s, t, y)
            _assert_bitwise_equal(list(got), list(want))


@pytest.fixture
def long_switch_interval() -> Iterator[None]:
    """Make the interpreter hand the GIL over only when its holder lets it go."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("long_switch_interval")
@pytest.mark.parametrize("method", ["forward", "forward_backward"])
def test_gil_released_during_a_long_call(method: str) -> None:
    """Another Python thread runs while a long call is in progress in this one.

    With a switch interval of 1000 s the interpreter never forces the GIL away from this thread,
    so the worker can run between ``in_call = True`` and ``in_call = False`` only if the call
    itself releases the GIL. The worker sleeps between steps, which releases the GIL, so this
    thread can always take it back.
    """
    rng = np.random.default_rng(3)
    shape = (1024, 32000)
    s = rng.standard_normal(shape, dtype=np.float32)
    t = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, shape[1], size=shape[0])
    loss_fn = kdloss.DistillationLoss(2.0, 0.5)

    state = {"in_call": False, "steps": 0, "steps_during_call": 0}
    stop = threading.Event()
    ready = threading.Event()

    def worker() -> None:
        ready.set()
        while not stop.is_set():
            state["steps"] += 1
            if state["in_call"]:
                state["steps_during_call"] += 1
            stop.wait(0.0002)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        state["in_call"] = True
        result = getattr(loss_fn, method)(s, t, y)
        state["in_call"] = False
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    loss = result[0] if method == "forward_backward" else result
    assert np.isfinite(loss)
    assert state["steps_during_call"] > 0, state


@pytest.mark.usefixtures("restore_num_threads")
def test_concurrent_callers_get_identical_results(big_inputs: dict[Any, Inputs]) -> None:
    s, t, y = big_inputs[np.float32]
    s64, t64, y64 = big_inputs[np.float64]
    want32 = _everything(s, t, y)
    want64 = _everything(s64, t64, y64)

    def job(i: int) -> list[Any]:
        return _everything(s, t, y) if i % 2 == 0 else _everything(s64, t64, y64)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(8)))
    for i, got in enumerate(results):
        _assert_bitwise_equal(got, want32 if i % 2 == 0 else want64)


@pytest.mark.usefixtures("restore_num_threads")
def test_changing_thread_count_while_others_compute(big_inputs: dict[Any, Inputs]) -> None:
    s, t, y = big_inputs[np.float64]
    kdloss.set_num_threads(2)
    loss_fn = kdloss.DistillationLoss(2.0, 0.5, reduction="none")
    want_loss, want_grad = loss_fn.forward_backward(s, t, y)
    stop = threading.Event()

    def toggler() -> None:
        n = 0
        while not stop.is_set():
            kdloss.set_num_threads(1 + n % 3)
            n += 1

    def job(_: int) -> tuple[Any, Any]:
        return loss_fn.forward_backward(s, t, y)

    thread = threading.Thread(target=toggler, daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(job, range(6)))
    finally:
        stop.set()
        thread.join(60)
    for loss, grad in results:
        assert loss.tobytes() == want_loss.tobytes()
        assert grad.tobytes() == want_grad.tobytes()


def _run_python(code: str, tmp_path: Any, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KDLOSS_NUM_THREADS"}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


CHECK = (
    "import numpy as np, kdloss\n"
    "n = kdloss.get_num_threads()\n"
    "s = np.random.default_rng(0).standard_normal((256, 4000))\n"
    "loss, grad = kdloss.DistillationLoss(2.0, 1.0).forward_backward(s, s[::-1])\n"
    "print(n, repr(loss))\n"
)


@pytest.mark.parametrize("n", ["1", "3"])
def test_env_var_sets_the_thread_count(tmp_path: Any, n: str) -> None:
    proc = _run_python(CHECK, tmp_path, KDLOSS_NUM_THREADS=n)
    assert proc.returncode == 0, proc.stderr
    count, loss = proc.stdout.split()
    assert count == n
    reference = _run_python(CHECK, tmp_path, KDLOSS_NUM_THREADS="2")
    assert reference.returncode == 0, reference.stderr
    assert reference.stdout.split() == ["2", loss]


def test_default_thread_count(tmp_path: Any) -> None:
    proc = _run_python(CHECK, tmp_path)
    assert proc.returncode == 0, proc.stderr
    count = int(proc.stdout.split()[0])
    assert 1 <= count <= (os.cpu_count() or 1)


def test_set_num_threads_overrides_env_var(tmp_path: Any) -> None:
    code = "import kdloss\nkdloss.set_num_threads(2)\nprint(kdloss.get_num_threads())\n"
    proc = _run_python(code, tmp_path, KDLOSS_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


@pytest.mark.parametrize("value", ["0", "-2", "abc", "", "1025", "99999999999999999999999"])
def test_bad_env_var_fails_the_import_clearly(tmp_path: Any, value: str) -> None:
    proc = _run_python(CHECK, tmp_path, KDLOSS_NUM_THREADS=value)
    assert proc.returncode == 1, proc.stderr
    assert "ValueError" in proc.stderr
    assert "KDLOSS_NUM_THREADS" in proc.stderr
    assert repr(value) in proc.stderr or f'"{value}"' in proc.stderr
    assert "panicked" not in proc.stderr
    assert "PanicException" not in proc.stderr


# kdloss.threads(n): a thread count for the calls one OS thread makes inside a block.


def test_threads_block_sets_and_restores_this_threads_count() -> None:
    before = kdloss.get_num_threads()
    other = 3 if before != 3 else 2
    with kdloss.threads(other):
        assert kdloss.get_num_threads() == other
        assert kdloss.build_info()["threads"] == other
    assert kdloss.get_num_threads() == before


def test_threads_blocks_nest() -> None:
    before = kdloss.get_num_threads()
    outer = kdloss.threads(2)
    with outer:
        with kdloss.threads(1):
            assert kdloss.get_num_threads() == 1
            with kdloss.threads(4):
                assert kdloss.get_num_threads() == 4
            assert kdloss.get_num_threads() == 1
        assert kdloss.get_num_threads() == 2
        # The same object entered again inside itself.
        with outer:
            assert kdloss.get_num_threads() == 2
        assert kdloss.get_num_threads() == 2
    assert kdloss.get_num_threads() == before


def test_threads_block_restores_on_exception() -> None:
    before = kdloss.get_num_threads()

    class Boom(Exception):
        pass

    def fail_inside() -> None:
        with kdloss.threads(1), kdloss.threads(2):
            assert kdloss.get_num_threads() == 2
            raise Boom

    with pytest.raises(Boom):
        fail_inside()
    assert kdloss.get_num_threads() == before
    # A failing kdloss call inside the block restores it too.
    with pytest.raises(ValueError, match="temperature"), kdloss.threads(1):
        kdloss.softmax(np.zeros(3), temperature=0.0)
    assert kdloss.get_num_threads() == before


@pytest.mark.usefixtures("restore_num_threads")
def test_threads_block_does_not_touch_other_threads() -> None:
    kdloss.set_num_threads(2)
    inside = threading.Event()
    release = threading.Event()
    seen: dict[str, int] = {}

    def blocked() -> None:
        with kdloss.threads(1):
            seen["inside"] = kdloss.get_num_threads()
            inside.set()
            assert release.wait(30)
        seen["after"] = kdloss.get_num_threads()

    thread = threading.Thread(target=blocked)
    thread.start()
    try:
        assert inside.wait(30)
        # While the other thread is inside its block, this one and a fresh one see the
        # process's count.
        seen["main"] = kdloss.get_num_threads()
        with ThreadPoolExecutor(max_workers=1) as pool:
            seen["fresh"] = pool.submit(kdloss.get_num_threads).result()
    finally:
        release.set()
        thread.join(60)
    assert seen == {"inside": 1, "main": 2, "fresh": 2, "after": 2}


@pytest.mark.usefixtures("restore_num_threads")
def test_threads_block_overrides_set_num_threads_and_env() -> None:
    kdloss.set_num_threads(1)
    with kdloss.threads(3):
        assert kdloss.get_num_threads() == 3
        # The process's count can still be changed inside; the block's count wins here.
        kdloss.set_num_threads(2)
        assert kdloss.get_num_threads() == 3
    assert kdloss.get_num_threads() == 2


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_block_results_are_bitwise_equal(big_inputs: dict[Any, Inputs], dtype: Any) -> None:
    s, t, y = big_inputs[dtype]
    kdloss.set_num_threads(1)
    want = _everything(s, t, y)
    # Counts above the process's one too: the pool grows to serve them.
    for n in (2, 4, 1, 3):
        with kdloss.threads(n):
            assert kdloss.get_num_threads() == n
            _assert_bitwise_equal(_everything(s, t, y), want)


@pytest.mark.usefixtures("restore_num_threads")
def test_threads_blocks_in_concurrent_threads_give_identical_results(
    big_inputs: dict[Any, Inputs],
) -> None:
    s, t, y = big_inputs[np.float32]
    want = _everything(s, t, y)

    def job(i: int) -> tuple[int, list[Any]]:
        n = 1 + i % 3
        with kdloss.threads(n):
            return kdloss.get_num_threads(), _everything(s, t, y)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(job, range(6)))
    for i, (n, got) in enumerate(results):
        assert n == 1 + i % 3
        _assert_bitwise_equal(got, want)


@pytest.mark.parametrize(
    ("n", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1025, ValueError),
        (2**70, ValueError),
        (2.0, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_threads_refuses_bad_counts_when_made(n: Any, error: type[Exception]) -> None:
    before = kdloss.get_num_threads()
    with pytest.raises(error, match="n must be"):
        kdloss.threads(n)
    assert kdloss.get_num_threads() == before


def test_threads_accepts_any_integer_type() -> None:
    with kdloss.threads(np.int8(2)):
        assert kdloss.get_num_threads() == 2
    with kdloss.threads(np.uint64(1024)):
        assert kdloss.get_num_threads() == 1024
