"""Large fresh outputs (gradients, softmax) come from a small cache of the buffers Python freed.

From 8 MiB up; smaller outputs are ordinary NumPy arrays.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import kdloss
import numpy as np
import pytest
from kdloss import _core, reference

SHAPE = (256, 8192)  # 8 MiB of float32: the smallest output that is cached


def _inputs(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    s = (rng.standard_normal(SHAPE) * 3).astype(dtype)
    t = (rng.standard_normal(SHAPE) * 3).astype(dtype)
    y = rng.integers(0, SHAPE[1], size=SHAPE[0])
    return s, t, y


def _grad(s: np.ndarray, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    return kdloss.DistillationLoss(2.0, 0.5).forward_backward(s, t, y)[1]


OUTPUTS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "gradient": _grad,
    "softmax": lambda s, t, y: kdloss.softmax(s, temperature=2.0),
    "log_softmax": lambda s, t, y: kdloss.log_softmax(s),
}


def _owner(a: np.ndarray) -> object:
    """What owns the memory of ``a``: the base at the end of its chain of views, or None."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.base


@pytest.fixture(autouse=True)
def _empty_cache() -> Any:
    gc.collect()
    kdloss.empty_cache()
    yield
    kdloss.empty_cache()


@pytest.mark.parametrize("make", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_live_outputs_never_share_memory(make: Any) -> None:
    s, t, y = _inputs()
    first = make(s, t, y)
    expected = first.copy()
    second = make(s, t, y)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(second, expected)
    second[:] = 0.0  # writeable, and writing it leaves the other alone
    np.testing.assert_array_equal(first, expected)
    assert first.flags.c_contiguous
    assert first.flags.writeable
    assert first.flags.aligned
    assert first.ctypes.data % 64 == 0


@pytest.mark.parametrize("make", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_a_freed_output_is_reused_for_the_same_size(make: Any) -> None:
    s, t, y = _inputs()
    out = make(s, t, y)
    expected = out.copy()
    address = out.ctypes.data
    assert _core.cached_bytes() == 0
    del out
    gc.collect()
    assert _core.cached_bytes() == s.nbytes
    again = make(s, t, y)
    assert again.ctypes.data == address
    assert _core.cached_bytes() == 0
    np.testing.assert_array_equal(again, expected)
    # A different size does not take it.
    del again
    smaller = make(s[:10], t[:10], y[:10])
    assert smaller.ctypes.data != address
    assert _core.cached_bytes() == s.nbytes


def test_reused_gradient_holds_only_the_new_values() -> None:
    s, t, y = _inputs(np.float64)
    stale = _grad(s * 5.0, t, y)
    del stale
    gc.collect()
    loss, grad = kdloss.DistillationLoss(2.0, 0.5).forward_backward(s, t, y)
    want_loss, want_grad = reference.distillation_loss_and_grad(s, t, y, temperature=2.0)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-15)


def test_outputs_survive_pickling_and_views() -> None:
    s, t, y = _inputs()
    grad = _grad(s, t, y)
    view = grad.reshape(-1)[::7]
    copy = pickle.loads(pickle.dumps(grad))
    expected = grad.copy()
    del grad
    gc.collect()
    # The view keeps the buffer alive: it is not handed out again.
    other = _grad(s, t, y)
    assert not np.shares_memory(other, view)
    np.testing.assert_array_equal(view, expected.reshape(-1)[::7])
    np.testing.assert_array_equal(copy, expected)


def test_the_cache_stays_small_and_empty_cache_frees_it() -> None:
    rng = np.random.default_rng(0)
    for rows in range(1, 40):
        x = rng.standard_normal((2100 + rows * 50, 1003)).astype(np.float32)
        kdloss.softmax(x)  # dropped at once
        assert _core.cached_bytes() <= 64 << 20
    big = np.zeros((1100, 16384), dtype=np.float32)  # 72 MB: more than the whole cache
    out = kdloss.softmax(big)
    del out
    gc.collect()
    assert _core.cached_bytes() <= 64 << 20
    assert _core.cached_bytes() > 0
    kdloss.empty_cache()
    assert _core.cached_bytes() == 0


@pytest.mark.parametrize("make", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_small_outputs_are_ordinary_arrays(make: Any) -> None:
    s, t, y = _inputs()
    out = make(s[:100], t[:100], y[:100])  # 3.1 MiB
    assert _owner(out) is None
    big = make(s, t, y)
    assert isinstance(_owner(big), _core.OutputBuffer)
    del big
    del out
    gc.collect()
    assert _core.cached_bytes() == s.nbytes


def test_empty_outputs() -> None:
    s = np.zeros((0, 5), dtype=np.float32)
    loss, grad = kdloss.DistillationLoss(alpha=1.0).forward_backward(s, s)
    assert loss == 0.0
    assert grad.shape == (0, 5)
    assert kdloss.softmax(s).shape == (0, 5)


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_cached_outputs_behave_as_views(name: str) -> None:
    # What the README says of them: writeable, not owning their memory (so not resizable in
    # place), and a copy owns its memory.
    s, t, y = _inputs()
    out = OUTPUTS[name](s, t, y)
    assert _owner(out) is not None
    assert not out.flags.owndata
    assert out.flags.writeable
    out[0, 0] = 1.5
    assert out[0, 0] == 1.5
    with pytest.raises(ValueError, match="resize"):
        out.resize((10, 10))
    copy = out.copy()
    assert copy.flags.owndata
    np.testing.assert_array_equal(copy, out)


NO_MEMORY = """
import resource, sys
import numpy as np, kdloss

x = np.ones((64, 1 << 20), np.float32)  # 256 MiB
kdloss.softmax(x[:1])  # loads everything a call needs, before the limit


def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024


# Room for 64 MiB more: enough for a row's scratch, far from the 256 MiB output.
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (64 << 20), resource.RLIM_INFINITY))
for name, call in [
    ("softmax", lambda: kdloss.softmax(x)),
    ("gradient", lambda: kdloss.distillation_loss_and_grad(x, x, temperature=2.0, alpha=1.0)),
]:
    try:
        call()
    except MemoryError as e:
        print(name, "MemoryError", e)
    else:
        print(name, "no error")
"""


# The published wheels are tested on macOS and Windows too, which have neither.
@pytest.mark.skipif(sys.platform != "linux", reason="limits memory with RLIMIT_AS and /proc")
def test_an_output_the_system_cannot_hold_is_a_memory_error(tmp_path: Any) -> None:
    env = {**os.environ, "KDLOSS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", NO_MEMORY],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    for name, line in zip(("softmax", "gradient"), lines):
        assert line.startswith(f"{name} MemoryError"), line
        assert str(64 << 22) in line
