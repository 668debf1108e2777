"""Parity of every public function with the NumPy float64 reference.

Shapes cover C from 1 to more than 32000, 1-D (one row) and 3-D (batch, seq, vocab) logits;
temperatures, alphas including 0 and 1, input dtypes and all three reductions.
"""

from __future__ import annotations

from typing import Any

import kdloss
import numpy as np
import pytest
from helpers import (
    TOLERANCES,
    assert_matches_reference,
    check_loss,
    computed_dtype,
    counted_rows,
    labels,
    logits,
    loss_magnitude,
    num_rows,
)
from kdloss import reference

SHAPES = [
    (1,),
    (7,),
    (1, 1),
    (5, 1),
    (3, 2),
    (4, 7),
    (6, 33),
    (32, 1000),
    (3, 32001),
    (2, 3, 50),
    (2, 5, 1000),
]
TEMPERATURE_ALPHA = [(1.0, 0.5), (2.0, 0.0), (4.0, 1.0), (0.5, 0.3), (7.5, 0.9)]
REDUCTIONS = ["mean", "sum", "none"]


def _labels_for(rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
    y = labels(rng, shape[:-1], shape[-1])
    return int(y) if y.ndim == 0 else y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("temperature", "alpha"), TEMPERATURE_ALPHA)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_distillation_float64(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    temperature: float,
    alpha: float,
    reduction: str,
) -> None:
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = _labels_for(rng, shape)
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    got = kdloss.distillation_loss(s, t, y, **kwargs)
    assert_matches_reference(got, None, s, t, y, dtype=np.float64, **kwargs)

    loss_fn = kdloss.DistillationLoss(temperature, alpha, reduction=reduction)
    assert_matches_reference(loss_fn(s, t, y), None, s, t, y, dtype=np.float64, **kwargs)
    got_loss, got_grad = loss_fn.forward_backward(s, t, y)
    assert_matches_reference(got_loss, got_grad, s, t, y, dtype=np.float64, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_distillation_float32(
    rng: np.random.Generator, shape: tuple[int, ...], temperature: float, reduction: str
) -> None:
    s = logits(rng, shape, np.float32)
    t = logits(rng, shape, np.float32)
    y = _labels_for(rng, shape)
    alpha = 0.5
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    got_loss, got_grad = kdloss.DistillationLoss(
        temperature, alpha, reduction=reduction
    ).forward_backward(s, t, y)
    assert_matches_reference(got_loss, got_grad, s, t, y, dtype=np.float32, **kwargs)
    got = kdloss.distillation_loss(s, t, y, **kwargs)
    assert_matches_reference(got, None, s, t, y, dtype=np.float32, **kwargs)


DTYPE_PAIRS = [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.float32, np.float64),
    (np.float64, np.float32),
    (np.float16, np.float16),
    (np.float16, np.float32),
    (np.float16, np.float64),
    (np.int64, np.int64),
    (np.int32, np.float64),
    (np.int16, np.float32),
    (np.float32, np.int8),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("student_dtype", "teacher_dtype"),
    DTYPE_PAIRS,
    ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in DTYPE_PAIRS],
)
@pytest.mark.parametrize("shape", [(16, 257), (2, 3, 33), (9,)], ids=str)
def test_dtypes(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    student_dtype: Any,
    teacher_dtype: Any,
    reduction: str,
) -> None:
    s = logits(rng, shape, student_dtype)
    t = logits(rng, shape, teacher_dtype)
    y = _labels_for(rng, shape)
    dtype = computed_dtype(student_dtype, teacher_dtype)
    temperature, alpha = 2.0, 0.4
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    got_loss, got_grad = kdloss.DistillationLoss(
        temperature, alpha, reduction=reduction
    ).forward_backward(s, t, y)
    assert_matches_reference(got_loss, got_grad, s, t, y, dtype=dtype, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.uint8])
@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0, 100.0])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_and_log_softmax(
    rng: np.random.Generator, shape: tuple[int, ...], temperature: float, dtype: Any
) -> None:
    x = logits(rng, shape, dtype) if np.dtype(dtype) != np.uint8 else rng.integers(0, 20, shape)
    x = x.astype(dtype)
    out_dtype = computed_dtype(dtype)
    rtol, factor = TOLERANCES[out_dtype]

    p = kdloss.softmax(x, temperature=temperature)
    assert isinstance(p, np.ndarray)
    assert p.dtype == out_dtype
    assert p.shape == x.shape
    # Below the smallest normal number relative accuracy is not representable.
    tiny = float(np.finfo(out_dtype).tiny)
    np.testing.assert_allclose(
        p, reference.softmax(x, temperature=temperature), rtol=rtol, atol=tiny
    )

    log_p = kdloss.log_softmax(x, temperature=temperature)
    assert isinstance(log_p, np.ndarray)
    assert log_p.dtype == out_dtype
    assert log_p.shape == x.shape
    mag = loss_magnitude(np.asarray(x, dtype=np.float64) / temperature, None)
    np.testing.assert_allclose(
        log_p, reference.log_softmax(x, temperature=temperature), rtol=rtol, atol=factor * mag
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 10.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kl_divergence(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: Any,
    temperature: float,
    reduction: str,
) -> None:
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    want = reference.kl_divergence(s, t, temperature=temperature, reduction=reduction)
    got = kdloss.kl_divergence(s, t, temperature=temperature, reduction=reduction)
    # KL alone is the alpha = 1 term without its T**2 weight.
    mag = loss_magnitude(s, t, temperature, 1.0) / temperature**2
    check_loss(got, want, reduction, dtype, mag, num_rows(shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, -1, 0, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, ignore_index: int, reduction: str
) -> None:
    x = logits(rng, shape, dtype)
    y: Any = labels(rng, shape[:-1], shape[-1], ignore_index=ignore_index)
    if y.ndim == 0:
        y = int(y)
    want = reference.cross_entropy(x, y, reduction=reduction, ignore_index=ignore_index)
    got = kdloss.cross_entropy(x, y, reduction=reduction, ignore_index=ignore_index)
    rows = counted_rows(y, shape, ignore_index)
    check_loss(got, want, reduction, dtype, loss_magnitude(x, None), rows)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("scale", "offset"), [(30.0, 0.0), (5.0, 500.0), (5.0, -3000.0)])
def test_large_logits(rng: np.random.Generator, scale: float, offset: float, dtype: Any) -> None:
    """Logits far from 0 or widely spread: nothing is clamped, the result stays exact."""
    shape = (8, 513)
    s = logits(rng, shape, dtype, scale=scale, offset=offset)
    t = logits(rng, shape, dtype, scale=scale, offset=-offset)
    y = labels(rng, shape[:-1], shape[-1])
    for temperature, alpha in [(1.0, 0.5), (3.0, 0.7), (0.2, 0.0)]:
        kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha}
        got_loss, got_grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
        assert_matches_reference(got_loss, got_grad, s, t, y, dtype=dtype, **kwargs)


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_extreme_temperatures(rng: np.random.Generator, temperature: float) -> None:
    shape = (6, 40)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1])
    for reduction in REDUCTIONS:
        kwargs: dict[str, Any] = {"temperature": temperature, "alpha": 0.6, "reduction": reduction}
        got_loss, got_grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
        assert_matches_reference(got_loss, got_grad, s, t, y, dtype=np.float64, **kwargs)


@pytest.mark.parametrize("ignore_index", [-1, 0, 5, 2**40])
def test_custom_ignore_index(rng: np.random.Generator, ignore_index: int) -> None:
    shape = (12, 9)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.3, ignore_index=ignore_index)
    for reduction in REDUCTIONS:
        kwargs: dict[str, Any] = {
            "temperature": 2.0,
            "alpha": 0.5,
            "reduction": reduction,
            "ignore_index": ignore_index,
        }
        got_loss, got_grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
        assert_matches_reference(got_loss, got_grad, s, t, y, dtype=np.float64, **kwargs)


def test_alpha_one_without_labels(rng: np.random.Generator) -> None:
    shape = (5, 3, 17)
    s = logits(rng, shape)
    t = logits(rng, shape)
    for reduction in REDUCTIONS:
        kwargs: dict[str, Any] = {"temperature": 3.0, "alpha": 1.0, "reduction": reduction}
        got_loss, got_grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t)
        assert_matches_reference(got_loss, got_grad, s, t, None, dtype=np.float64, **kwargs)
        got = kdloss.distillation_loss(s, t, **kwargs)
        assert_matches_reference(got, None, s, t, None, dtype=np.float64, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 131073), (2, 200003), (131073,)], ids=str)
def test_very_long_rows(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> None:
    """Rows longer than any buffer or block size; one row may be a whole parallel call."""
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y = _labels_for(rng, shape)
    for reduction in REDUCTIONS:
        kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": 0.5, "reduction": reduction}
        got_loss, got_grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
        assert_matches_reference(got_loss, got_grad, s, t, y, dtype=dtype, **kwargs)
