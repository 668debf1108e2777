"""The gradient of forward_backward: finite differences, the closed form, shape and dtype."""

from __future__ import annotations

from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from helpers import IGNORE, assert_matches_reference, counted_rows, labels, logits
from kdloss import reference

REDUCTIONS = ["mean", "sum", "none"]


def _total_loss(
    s: npt.NDArray[np.float64], t: npt.NDArray[np.float64], y: Any, kwargs: dict[str, Any]
) -> float:
    # For "none" the gradient of row i is that of row i's loss, which is the gradient of the
    # sum of all rows' losses, since the rows are independent.
    return float(np.sum(kdloss.distillation_loss(s, t, y, **kwargs)))


def _central_differences(
    s: npt.NDArray[np.float64],
    t: npt.NDArray[np.float64],
    y: Any,
    kwargs: dict[str, Any],
    step: float = 1e-5,
) -> npt.NDArray[np.float64]:
    grad = np.zeros_like(s)
    for index in np.ndindex(s.shape):
        up = s.copy()
        up[index] += step
        down = s.copy()
        down[index] -= step
        grad[index] = (_total_loss(up, t, y, kwargs) - _total_loss(down, t, y, kwargs)) / (2 * step)
    return grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("temperature", "alpha"), [(1.0, 0.5), (2.0, 0.0), (3.0, 1.0), (0.7, 0.25), (4.0, 0.9)]
)
@pytest.mark.parametrize("shape", [(6,), (4, 5), (2, 3, 4), (3, 1)], ids=str)
def test_matches_finite_differences(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    temperature: float,
    alpha: float,
    reduction: str,
) -> None:
    s = logits(rng, shape, scale=2.0)
    t = logits(rng, shape, scale=2.0)
    y: Any = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.3)
    if y.ndim == 0:
        y = int(y)
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    _, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    numeric = _central_differences(s, t, y, kwargs)
    assert grad.shape == s.shape
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 0, 2])
def test_finite_differences_with_ignore_index(
    rng: np.random.Generator, reduction: str, ignore_index: int
) -> None:
    shape = (5, 4)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = np.array([0, 1, 2, 3, 2])
    y[1] = ignore_index
    kwargs: dict[str, Any] = {
        "temperature": 2.0,
        "alpha": 0.5,
        "reduction": reduction,
        "ignore_index": ignore_index,
    }
    _, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    numeric = _central_differences(s, t, y, kwargs)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    ignored = y == ignore_index
    assert np.all(grad[ignored] == 0.0)
    assert np.all(np.any(grad[~ignored] != 0.0, axis=-1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("temperature", "alpha"), [(1.0, 0.5), (2.0, 0.0), (3.0, 1.0), (0.5, 0.75)]
)
def test_matches_closed_form(
    rng: np.random.Generator, dtype: Any, temperature: float, alpha: float, reduction: str
) -> None:
    shape = (9, 3, 130)
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y = labels(rng, shape[:-1], shape[-1])
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    assert_matches_reference(loss, grad, s, t, y, dtype=dtype, **kwargs)


def test_mean_is_sum_over_count(rng: np.random.Generator) -> None:
    shape = (7, 11)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.4)
    count = counted_rows(y, shape, IGNORE)
    assert 0 < count < 7
    _, grad_sum = kdloss.DistillationLoss(2.0, 0.5, reduction="sum").forward_backward(s, t, y)
    _, grad_mean = kdloss.DistillationLoss(2.0, 0.5, reduction="mean").forward_backward(s, t, y)
    _, grad_none = kdloss.DistillationLoss(2.0, 0.5, reduction="none").forward_backward(s, t, y)
    np.testing.assert_allclose(grad_mean, grad_sum / count, rtol=1e-12, atol=1e-17)
    np.testing.assert_allclose(grad_none, grad_sum, rtol=1e-12, atol=1e-17)


def test_alpha_zero_gradient_ignores_teacher(rng: np.random.Generator) -> None:
    shape = (4, 6)
    s = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.0)
    _, grad_a = kdloss.DistillationLoss(3.0, 0.0).forward_backward(s, logits(rng, shape), y)
    _, grad_b = kdloss.DistillationLoss(3.0, 0.0).forward_backward(s, np.full(shape, np.nan), y)
    assert np.all(np.isfinite(grad_b))
    np.testing.assert_allclose(grad_b, grad_a, rtol=1e-12, atol=1e-17)


@pytest.mark.parametrize(
    ("student_dtype", "teacher_dtype", "expected"),
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.float16, np.float16, np.float32),
        (np.int64, np.int64, np.float64),
    ],
)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)], ids=str)
def test_grad_shape_and_dtype(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    student_dtype: Any,
    teacher_dtype: Any,
    expected: Any,
) -> None:
    s = logits(rng, shape, student_dtype)
    t = logits(rng, shape, teacher_dtype)
    y: Any = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.0)
    if y.ndim == 0:
        y = int(y)
    for reduction in REDUCTIONS:
        _, grad = kdloss.DistillationLoss(reduction=reduction).forward_backward(s, t, y)
        assert isinstance(grad, np.ndarray)
        assert grad.shape == s.shape
        assert grad.dtype == np.dtype(expected)
        assert grad.flags.writeable
        assert not np.shares_memory(grad, s)


def test_grad_of_masked_classes_is_zero() -> None:
    s = np.array([[1.0, -np.inf, 2.0, 0.5], [-np.inf, 0.0, 3.0, -np.inf]])
    t = np.array([[0.5, -np.inf, 1.0, 2.0], [-np.inf, 1.0, -1.0, -np.inf]])
    y = np.array([2, 1])
    for reduction in REDUCTIONS:
        loss, grad = kdloss.DistillationLoss(2.0, 0.5, reduction=reduction).forward_backward(
            s, t, y
        )
        assert np.all(np.isfinite(loss))
        assert np.all(np.isfinite(grad))
        assert np.all(grad[np.isneginf(s)] == 0.0)
        _, want = reference.distillation_loss_and_grad(
            s, t, y, temperature=2.0, alpha=0.5, reduction=reduction
        )
        np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [4000, 4001])
def test_large_gradient_into_out_at_every_alignment(dtype: Any, classes: int) -> None:
    """A gradient this large is written with non-temporal stores, as wide as the alignment of
    each row allows; every alignment gives the same numbers as a fresh array."""
    rng = np.random.default_rng(5)
    rows = (9 << 20) // (classes * np.dtype(dtype).itemsize)  # over 8 MiB
    s = logits(rng, (rows, classes), dtype)
    t = logits(rng, (rows, classes), dtype)
    y = labels(rng, (rows,), classes)
    kd = kdloss.DistillationLoss(2.0, 0.5)
    loss, grad = kd.forward_backward(s, t, y)
    itemsize = np.dtype(dtype).itemsize
    buf = np.full(rows * classes + 64, np.nan, dtype=dtype)
    base = (-buf.ctypes.data % 64) // itemsize  # the first element on a 64-byte line
    for skew in sorted({0, 8 // itemsize, 16 // itemsize, 32 // itemsize, 48 // itemsize}):
        start = base + skew
        out = buf[start : start + rows * classes].reshape(rows, classes)
        out.fill(np.nan)
        loss2, grad2 = kd.forward_backward(s, t, y, out=out)
        assert grad2 is out
        assert loss2 == loss
        np.testing.assert_array_equal(out, grad)
    # Rows of the streamed gradient against the same rows alone, a gradient small enough for
    # plain stores (the sum reduction, so that only the scale, 1 / counted rows, differs).
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
    counted = np.count_nonzero(y != IGNORE)
    by_sum = kdloss.DistillationLoss(2.0, 0.5, reduction="sum")
    for lo in (0, rows // 2, rows - 3):
        _, part = by_sum.forward_backward(s[lo : lo + 3], t[lo : lo + 3], y[lo : lo + 3])
        np.testing.assert_allclose(grad[lo : lo + 3] * counted, part, **tol)
