"""Every input np.asarray accepts gives the result of the equivalent C-contiguous array."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from helpers import labels, logits

REDUCTIONS = ["mean", "sum", "none"]
Arr = npt.NDArray[Any]


def _results(s: Any, t: Any, y: Any, reduction: str = "none") -> list[Any]:
    loss_fn = kdloss.DistillationLoss(2.0, 0.3, reduction=reduction)
    loss, grad = loss_fn.forward_backward(s, t, y)
    return [
        loss,
        grad,
        loss_fn(s, t, y),
        kdloss.kl_divergence(s, t, temperature=2.0, reduction=reduction),
        kdloss.cross_entropy(s, y, reduction=reduction),
        kdloss.softmax(s, temperature=2.0),
        kdloss.log_softmax(t, temperature=0.5),
    ]


def _assert_same(got: list[Any], want: list[Any]) -> None:
    for g, w in zip(got, want):
        assert type(g) is type(w)
        if isinstance(w, np.ndarray):
            assert g.shape == w.shape
            assert g.dtype == w.dtype
        tol = 1e-13 if np.asarray(w).dtype == np.float64 else 1e-6
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * 1e-3)


VIEWS: dict[str, Callable[[Arr], Arr]] = {
    # Each builds, from a C-contiguous (rows, C) array, a view with the same values.
    "fortran": lambda a: np.asfortranarray(a),
    "column_strided": lambda a: np.repeat(a, 2, axis=-1)[:, ::2],
    "row_strided": lambda a: np.repeat(a, 3, axis=0)[::3],
    "negative_rows": lambda a: a[::-1].copy()[::-1],
    "negative_columns": lambda a: a[:, ::-1].copy()[:, ::-1],
    "negative_both": lambda a: a[::-1, ::-1].copy()[::-1, ::-1],
    "offset_slice": lambda a: np.pad(a, ((1, 0), (2, 1)))[1:, 2:-1],
    "as_3d_view": lambda a: a.reshape(1, *a.shape)[0],
}


def _readonly(a: Arr) -> Arr:
    b = a.copy()
    b.flags.writeable = False
    return b


VIEWS["readonly"] = _readonly


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("view", list(VIEWS), ids=str)
@pytest.mark.parametrize("which", ["student", "teacher", "both"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_views_match_contiguous(
    rng: np.random.Generator, dtype: Any, view: str, which: str, reduction: str
) -> None:
    shape = (7, 19)
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y = labels(rng, shape[:-1], shape[-1])
    want = _results(s, t, y, reduction)
    make = VIEWS[view]
    s_view = make(s) if which in ("student", "both") else s
    t_view = make(t) if which in ("teacher", "both") else t
    np.testing.assert_array_equal(s_view, s)
    np.testing.assert_array_equal(t_view, t)
    _assert_same(_results(s_view, t_view, y, reduction), want)


def test_3d_permuted_views(rng: np.random.Generator) -> None:
    base_s = logits(rng, (6, 4, 3))
    base_t = logits(rng, (6, 4, 3))
    s = base_s.transpose(2, 0, 1)  # shape (3, 6, 4), no axis contiguous in row order
    t = base_t.transpose(2, 0, 1)[:, ::-1, :]
    y = labels(rng, (3, 6), 4)
    want = _results(np.ascontiguousarray(s), np.ascontiguousarray(t), y)
    _assert_same(_results(s, t, y), want)
    y_view = np.asfortranarray(y)
    _assert_same(_results(s, t, y_view), want)


def test_zero_stride_broadcast(rng: np.random.Generator) -> None:
    row_s = logits(rng, (11,))
    row_t = logits(rng, (11,))
    s = np.broadcast_to(row_s, (5, 11))
    t = np.broadcast_to(row_t[None, :], (5, 11))
    y = np.broadcast_to(np.int64(3), (5,))
    assert s.strides[0] == 0
    assert not s.flags.writeable
    want = _results(np.ascontiguousarray(s), np.ascontiguousarray(t), np.ascontiguousarray(y))
    _assert_same(_results(s, t, y), want)


def test_labels_views(rng: np.random.Generator) -> None:
    shape = (8, 5)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1])
    want = _results(s, t, y)
    y_strided = np.repeat(y, 2)[::2]
    y_reversed = y[::-1].copy()[::-1]
    y_readonly = y.copy()
    y_readonly.flags.writeable = False
    for view in (y_strided, y_reversed, y_readonly):
        _assert_same(_results(s, t, view), want)


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64],
)
def test_any_integer_label_dtype(rng: np.random.Generator, dtype: Any) -> None:
    shape = (9, 6)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.0)
    want = _results(s, t, y)
    _assert_same(_results(s, t, y.astype(dtype)), want)
    # Same for the reduced forms.
    for reduction in ("mean", "sum"):
        _assert_same(_results(s, t, y.astype(dtype), reduction), _results(s, t, y, reduction))


def test_ignore_index_matching_an_unsigned_dtype(rng: np.random.Generator) -> None:
    shape = (6, 4)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = np.array([0, 255, 3, 255, 1, 2], dtype=np.uint8)
    loss_fn = kdloss.DistillationLoss(2.0, 0.5, reduction="none", ignore_index=255)
    loss, grad = loss_fn.forward_backward(s, t, y)
    ref_loss, ref_grad = kdloss.DistillationLoss(
        2.0, 0.5, reduction="none", ignore_index=-7
    ).forward_backward(s, t, np.where(y == 255, -7, y.astype(np.int64)))
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(grad, ref_grad)
    assert loss[1] == 0.0
    assert loss[3] == 0.0


def test_python_lists(rng: np.random.Generator) -> None:
    shape = (4, 5)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1])
    want = _results(s, t, y)
    _assert_same(_results(s.tolist(), t.tolist(), y.tolist()), want)
    _assert_same(_results(s.tolist(), t, y), want)
    _assert_same(_results(s, t.tolist(), tuple(y.tolist())), want)


def test_integer_lists_compute_in_float64() -> None:
    s = [[1, 2, 3], [0, 0, 5]]
    t = [[3, 2, 1], [1, 1, 1]]
    y = [2, 0]
    got = _results(s, t, y)
    want = _results(np.array(s, dtype=np.float64), np.array(t, dtype=np.float64), y)
    _assert_same(got, want)


@pytest.mark.parametrize("label", [2, np.int64(2), np.array(2), np.uint8(2), np.int32(2)], ids=repr)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_one_dimensional_logits_with_scalar_label(label: Any, reduction: str) -> None:
    s = np.array([0.5, -1.0, 2.0, 0.25])
    t = np.array([1.0, 0.0, 1.5, -0.5])
    loss_fn = kdloss.DistillationLoss(2.0, 0.5, reduction=reduction)
    loss, grad = loss_fn.forward_backward(s, t, label)
    loss_2d, grad_2d = loss_fn.forward_backward(s[None], t[None], np.array([2]))
    assert grad.shape == (4,)
    np.testing.assert_allclose(grad, grad_2d[0], rtol=1e-13)
    if reduction == "none":
        assert isinstance(loss, np.ndarray)
        assert loss.shape == ()
        np.testing.assert_allclose(loss, loss_2d[0], rtol=1e-13)
    else:
        assert type(loss) is float
        assert loss == pytest.approx(loss_2d, rel=1e-13)
    ce = kdloss.cross_entropy(s, label, reduction=reduction)
    np.testing.assert_allclose(
        ce,
        kdloss.cross_entropy(s[None], [2], reduction=reduction)[0]
        if reduction == "none"
        else kdloss.cross_entropy(s[None], [2], reduction=reduction),
        rtol=1e-13,
    )


def test_one_dimensional_ignored_scalar_label() -> None:
    s = np.array([0.5, -1.0, 2.0])
    loss, grad = kdloss.DistillationLoss(reduction="mean").forward_backward(s, s, -100)
    assert loss == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("view", ["contiguous", "fortran", "strided", "readonly"])
def test_inputs_are_not_modified(rng: np.random.Generator, view: str) -> None:
    shape = (5, 9)
    s = logits(rng, shape, np.float32)
    t = logits(rng, shape, np.float32)
    y = labels(rng, shape[:-1], shape[-1])
    s_in, t_in = {
        "contiguous": lambda: (s.copy(), t.copy()),
        "fortran": lambda: (np.asfortranarray(s), np.asfortranarray(t)),
        "strided": lambda: (np.repeat(s, 2, axis=1)[:, ::2], np.repeat(t, 2, axis=1)[:, ::2]),
        "readonly": lambda: (_readonly(s), _readonly(t)),
    }[view]()
    y_in = y.copy()
    for reduction in REDUCTIONS:
        _results(s_in, t_in, y_in, reduction)
    np.testing.assert_array_equal(s_in, s)
    np.testing.assert_array_equal(t_in, t)
    np.testing.assert_array_equal(y_in, y)


def test_outputs_are_fresh_arrays(rng: np.random.Generator) -> None:
    s = logits(rng, (3, 4))
    t = logits(rng, (3, 4))
    y = np.array([0, 1, 2])
    _, grad = kdloss.DistillationLoss().forward_backward(s, t, y)
    p = kdloss.softmax(s)
    for out in (grad, p):
        assert not np.shares_memory(out, s)
        assert not np.shares_memory(out, t)
        assert out.flags.writeable
        assert out.flags.c_contiguous
    _, grad_again = kdloss.DistillationLoss().forward_backward(s, t, y)
    assert not np.shares_memory(grad, grad_again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_inputs_are_not_copied(dtype: Any) -> None:
    """No array of the inputs' size is allocated through NumPy for C-contiguous inputs.

    tracemalloc sees NumPy's data buffers, so a conversion or copy of either input in the
    Python layer shows up in the peak.
    """
    rng = np.random.default_rng(1)
    shape = (512, 2048)
    s = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, shape[1], size=shape[0])
    loss_fn = kdloss.DistillationLoss(2.0, 0.5)
    loss_fn(s, t, y)  # warm up: first-call allocations (thread pool, caches) are not the point
    size = s.nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        loss_fn(s, t, y)
        kdloss.kl_divergence(s, t)
        kdloss.cross_entropy(s, y)
        _, forward_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _, grad = loss_fn.forward_backward(s, t, y)
        _, backward_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert forward_peak < size // 8, forward_peak
    # Only the gradient itself (the size of one input) may be allocated.
    assert backward_peak < size + size // 8, backward_peak
    assert grad.nbytes == size
