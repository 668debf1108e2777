"""Input generators and tolerance checks shared by the test modules."""

from __future__ import annotations

import importlib
import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from kdloss import reference

IGNORE = -100

# Set to 1 where PyTorch and JAX are installed on purpose (.ci/torch): their tests then fail,
# instead of being skipped, when either is missing.
REQUIRE_FRAMEWORKS = os.environ.get("KDLOSS_REQUIRE_TORCH") == "1"


def framework(name: str) -> Any:
    """The module ``name`` (``"torch"``, ``"jax.numpy"``); the calling test, or the test module
    calling it at import, is skipped when it is not installed, unless
    ``KDLOSS_REQUIRE_TORCH=1``, which makes that a failure."""
    if REQUIRE_FRAMEWORKS:
        return importlib.import_module(name)
    return pytest.importorskip(name)


# (rtol, atol factor) by computed dtype; the atol factor multiplies the magnitude of the terms.
TOLERANCES = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (1e-5, 5e-7),
}


def computed_dtype(*dtypes: npt.DTypeLike) -> np.dtype[Any]:
    """The dtype kdloss computes in: float64 if any input is float64 or integer, else float32."""
    for dt in dtypes:
        kind = np.dtype(dt).kind
        if kind in "iub" or np.dtype(dt) == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def logits(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: npt.DTypeLike = np.float64,
    scale: float = 3.0,
    offset: float = 0.0,
) -> npt.NDArray[Any]:
    """Random logits; integers for integer dtypes."""
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-10, 11, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def labels(
    rng: np.random.Generator,
    row_shape: tuple[int, ...],
    num_classes: int,
    ignore_fraction: float = 0.2,
    ignore_index: int = IGNORE,
) -> npt.NDArray[np.int64]:
    """Random labels in [0, C), a fraction of them replaced by ``ignore_index``."""
    y = rng.integers(0, num_classes, size=row_shape)
    if ignore_fraction > 0 and y.ndim > 0 and y.size > 1:
        mask = rng.random(row_shape) < ignore_fraction
        # Keep at least one counted row so that "mean" is not trivially 0.
        mask.flat[0] = False
        y = np.where(mask, ignore_index, y)
    return np.asarray(y, dtype=np.int64)


def _finite_max_abs(*arrays: npt.ArrayLike) -> float:
    biggest = 0.0
    for a in arrays:
        x = np.asarray(a, dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size:
            biggest = max(biggest, float(np.max(np.abs(finite))))
    return biggest


def loss_magnitude(
    student: npt.ArrayLike,
    teacher: npt.ArrayLike | None,
    temperature: float = 1.0,
    alpha: float = 0.0,
) -> float:
    """A bound on the size of the terms that make up one row's loss.

    Rounding errors are relative to these terms (log-probabilities, logsumexp), not to the loss,
    which can be close to 0 (a KL between similar distributions).
    """
    s = np.asarray(student)
    num_classes = s.shape[-1]
    log_c = math.log(num_classes) + 1.0
    xs = _finite_max_abs(s)
    xt = _finite_max_abs(teacher) if teacher is not None else 0.0
    kl_part = alpha * temperature * temperature * ((xs + xt) / temperature + log_c)
    ce_part = (1.0 - alpha) * (xs + log_c)
    return kl_part + ce_part


def grad_magnitude(student: npt.ArrayLike, temperature: float, alpha: float) -> float:
    """A bound on the size of the rounding error in one gradient element, over unit roundoff."""
    s = np.asarray(student)
    log_c = math.log(s.shape[-1]) + 1.0
    xs = _finite_max_abs(s)
    return (alpha * max(temperature, 1.0) + (1.0 - alpha)) * (xs + log_c)


def num_rows(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64))


def counted_rows(y: npt.ArrayLike | None, shape: tuple[int, ...], ignore_index: int) -> int:
    if y is None:
        return num_rows(shape)
    return int(np.count_nonzero(np.asarray(y) != ignore_index))


def check_loss(
    actual: object,
    expected: object,
    reduction: str,
    dtype: npt.DTypeLike,
    magnitude: float,
    rows: int,
) -> None:
    """Assert the type, dtype, shape and value of a reduced or per-row loss."""
    rtol, factor = TOLERANCES[np.dtype(dtype)]
    if reduction == "none":
        assert isinstance(actual, np.ndarray), type(actual)
        assert isinstance(expected, np.ndarray)
        assert actual.dtype == np.dtype(dtype)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=factor * magnitude)
    else:
        assert type(actual) is float, type(actual)
        assert isinstance(expected, float)
        atol = factor * magnitude * (max(rows, 1) if reduction == "sum" else 1)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def check_grad(
    actual: object,
    expected: npt.NDArray[np.float64],
    dtype: npt.DTypeLike,
    magnitude: float,
    divisor: int,
) -> None:
    """Assert dtype, shape and value of a gradient; ``divisor`` is the count for "mean"."""
    rtol, factor = TOLERANCES[np.dtype(dtype)]
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=factor * magnitude / max(divisor, 1)
    )


def assert_matches_reference(
    loss: object,
    grad: object | None,
    student: npt.NDArray[Any],
    teacher: npt.NDArray[Any],
    y: npt.ArrayLike | None,
    *,
    dtype: npt.DTypeLike | None = None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = IGNORE,
) -> None:
    """Assert that kdloss's ``loss`` (and ``grad``, unless None) for these inputs and settings
    match :mod:`kdloss.reference` within the tolerance of ``dtype`` (by default the dtype
    kdloss computes the inputs in), scaled by the size of the terms."""
    want_loss, want_grad = reference.distillation_loss_and_grad(
        student,
        teacher,
        y,
        temperature=temperature,
        alpha=alpha,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    if dtype is None:
        dtype = computed_dtype(student.dtype, teacher.dtype)
    rows = counted_rows(y, student.shape, ignore_index)
    magnitude = loss_magnitude(student, teacher, temperature, alpha)
    check_loss(loss, want_loss, reduction, dtype, magnitude, rows)
    if grad is not None:
        divisor = rows if reduction == "mean" else 1
        check_grad(grad, want_grad, dtype, grad_magnitude(student, temperature, alpha), divisor)
