"""The preallocated gradient (``out=``), ``build_info`` and the ``KDLOSS_SIMD`` switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kdloss
import numpy as np
import pytest


def _inputs(
    shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal(shape) * 3).astype(dtype)
    t = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, shape[-1], size=shape[:-1])
    return s, t, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    [(7, 33), (3, 4, 129), (600, 4000)],  # the last one is big enough to stream its stores
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_out_receives_the_same_gradient(dtype: Any, shape: tuple[int, ...], reduction: str) -> None:
    s, t, y = _inputs(shape, dtype)
    kd = kdloss.DistillationLoss(2.0, 0.3, reduction=reduction)
    loss, grad = kd.forward_backward(s, t, y)
    out = np.full(shape, np.nan, dtype=dtype)
    loss2, grad2 = kd.forward_backward(s, t, y, out=out)
    assert grad2 is out
    np.testing.assert_array_equal(out, grad)
    np.testing.assert_array_equal(np.asarray(loss2), np.asarray(loss))


def test_out_is_overwritten_on_ignored_rows() -> None:
    s, t, y = _inputs((6, 10))
    y[::2] = -100
    out = np.full(s.shape, 7.0, dtype=np.float32)
    kdloss.distillation_loss_and_grad(s, t, y, temperature=2.0, out=out)
    assert np.all(out[::2] == 0.0)
    assert np.all(np.isfinite(out))


def test_out_function_form() -> None:
    s, t, y = _inputs((5, 17), np.float64)
    out = np.empty_like(s)
    loss, grad = kdloss.distillation_loss_and_grad(s, t, y, alpha=0.7, out=out)
    ref_loss, ref_grad = kdloss.distillation_loss_and_grad(s, t, y, alpha=0.7)
    assert grad is out
    assert loss == ref_loss
    np.testing.assert_array_equal(out, ref_grad)


@pytest.mark.parametrize(
    ("make_out", "exc", "match"),
    [
        (lambda s: np.empty((s.shape[0], s.shape[1] + 1), s.dtype), ValueError, "shape"),
        (lambda s: np.empty(s.shape, np.float64), ValueError, "dtype"),
        (lambda s: np.empty(s.shape[::-1], s.dtype).T, ValueError, "C-contiguous"),
        (lambda s: np.empty((s.shape[0], 2 * s.shape[1]), s.dtype)[:, ::2], ValueError, "C-contig"),
        (lambda s: _read_only(np.empty_like(s)), ValueError, "writeable"),
        (lambda s: s.tolist(), TypeError, "out"),
    ],
)
def test_bad_out_is_rejected(make_out: Any, exc: type[Exception], match: str) -> None:
    s, t, y = _inputs((4, 9))
    with pytest.raises(exc, match=match) as info:
        kdloss.DistillationLoss(2.0).forward_backward(s, t, y, out=make_out(s))
    assert type(info.value) is exc


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def test_out_aliasing_an_input_is_rejected() -> None:
    s, t, y = _inputs((4, 9))
    with pytest.raises(ValueError, match="out") as info:
        kdloss.distillation_loss_and_grad(s, t, y, out=s)
    assert type(info.value) is ValueError


def test_build_info() -> None:
    info = kdloss.build_info()
    assert info["version"] == kdloss.__version__
    assert info["simd"] in info["simd_available"]
    assert "scalar" in info["simd_available"]
    assert info["threads"] == kdloss.get_num_threads()
    assert isinstance(info["lanes"], int)
    assert info["lanes"] > 0


def _import_with(env_value: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KDLOSS_SIMD=env_value)
    code = (
        "import warnings; warnings.simplefilter('always');\n"
        "import kdloss; print(kdloss.build_info()['simd'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=60,
        check=False,
    )


def test_simd_env_selects_each_available_level(tmp_path: Path) -> None:
    for level in kdloss.build_info()["simd_available"]:
        proc = _import_with(level, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == level
        assert "Warning" not in proc.stderr


def test_simd_env_unavailable_level_falls_back_with_a_warning(tmp_path: Path) -> None:
    missing = [
        lv
        for lv in ("scalar", "avx2", "avx512", "neon")
        if lv not in kdloss.build_info()["simd_available"]
    ]
    assert missing  # no CPU has both the x86 levels and NEON
    proc = _import_with(missing[0], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" in proc.stderr
    assert missing[0] in proc.stderr
    assert proc.stdout.strip() == kdloss.build_info()["simd"]


def test_simd_env_unknown_level_fails_the_import(tmp_path: Path) -> None:
    proc = _import_with("sse9", tmp_path)
    assert proc.returncode != 0
    assert "KDLOSS_SIMD" in proc.stderr
    assert "ValueError" in proc.stderr
