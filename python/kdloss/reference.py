"""A plain NumPy float64 implementation of the kdloss functions.

This module is the oracle for the test suite and the baseline for the benchmarks. It follows the
same semantics as the native functions (see the package README) but favours clarity over speed:
every function converts its inputs to float64, computes whole arrays with NumPy, and always
returns float64 results.

Rows are all leading indices of an array of shape ``(..., C)``; softmax, log-softmax, the KL
divergence and the cross-entropy act along the last axis.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_and_grad",
    "kl_divergence",
    "log_softmax",
    "softmax",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

_REDUCTIONS = ("mean", "sum", "none")
_INT64_MAX = int(np.iinfo(np.int64).max)


# ---------------------------------------------------------------------------------------------
# Argument checks and conversions
# ---------------------------------------------------------------------------------------------


def _as_float(value: float, name: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got an int too large for a float") from None


def _check_temperature(temperature: float) -> float:
    value = _as_float(temperature, "temperature")
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return value


def _check_alpha(alpha: float) -> float:
    value = _as_float(alpha, "alpha")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return value


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    return reduction


def _as_logits(x: npt.ArrayLike, name: str) -> FloatArray:
    """Convert logits to a float64 array of shape (..., C) with C >= 1."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    if array.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one class, got shape {array.shape}")
    return array.astype(np.float64)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_labels(labels: npt.ArrayLike, row_shape: tuple[int, ...]) -> IntArray:
    """Convert labels to an int64 array of shape ``row_shape``."""
    array = np.asarray(labels)
    if array.dtype == np.object_ and array.size > 0 and all(_is_int(v) for v in array.flat):
        # Python ints, some beyond int64 (NumPy gives those an object array): such a value is
        # out of [0, C) for any C.
        biggest = max((int(v) for v in array.flat), key=abs)
        if not -(2**63) <= biggest <= _INT64_MAX:
            raise ValueError(f"labels hold a value out of range: {biggest}")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integers, got dtype {array.dtype}")
    if array.shape != row_shape:
        raise ValueError(f"labels must have shape {row_shape}, got shape {array.shape}")
    if array.dtype.kind == "u" and array.size > 0 and int(array.max()) > _INT64_MAX:
        raise ValueError(f"labels hold a value out of range: {int(array.max())}")
    return array.astype(np.int64)


def _counted_rows(labels: IntArray, ignore_index: int, num_classes: int) -> BoolArray:
    """Return which rows count, after checking that every other label is a valid class."""
    if -(2**63) <= ignore_index <= _INT64_MAX:
        ignored = labels == np.int64(ignore_index)
    else:
        ignored = np.zeros(labels.shape, dtype=np.bool_)
    bad = ~ignored & ((labels < 0) | (labels >= num_classes))
    if np.any(bad):
        first = int(labels[bad].ravel()[0])
        raise ValueError(
            f"labels must be in [0, {num_classes}) or equal ignore_index={ignore_index}, "
            f"got {first}"
        )
    counted: BoolArray = np.logical_not(ignored)
    return counted


# ---------------------------------------------------------------------------------------------
# Row-wise building blocks (float64 in, float64 out, no checks)
# ---------------------------------------------------------------------------------------------


def _shifted(x: FloatArray, temperature: float) -> FloatArray:
    """``(x - max(x)) / temperature`` along the last axis: ``x / T`` less its row maximum.

    Subtracting the maximum before dividing keeps every value in ``[-inf, 0]``, so a tiny
    temperature cannot overflow finite logits to +inf. Where ``x - max(x)`` itself overflows
    (logits near the type's limit), the difference of halves gives the true value.
    """
    # Masked (-inf) classes, all -inf rows, +inf and NaN are allowed: let them propagate quietly.
    # The halves are used only where the difference overflows; elsewhere (a temperature whose
    # half underflows to 0, say) whatever they came to is discarded.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        top = np.max(x, axis=-1, keepdims=True)
        diff = x - top
        halves = (x * 0.5 - top * 0.5) / (temperature * 0.5)
        result: FloatArray = np.where(np.isinf(diff) & np.isfinite(x), halves, diff / temperature)
    return result


def _log_sum_exp_shifted(z: FloatArray) -> FloatArray:
    """``log(sum(exp(z)))`` along the last axis for ``z`` with row maximum 0, as ``log1p`` of the
    sum less one: the maximum's own ``exp(0) = 1`` is left out of the floating-point sum, so a
    sum just above 1 keeps its relative accuracy."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ones = np.sum(z == 0.0, axis=-1, keepdims=True)
        rest = np.sum(np.where(z == 0.0, 0.0, np.exp(z)), axis=-1, keepdims=True)
        result: FloatArray = np.log1p(rest + (ones - 1.0))
    return result


def _log_softmax_rows(x: FloatArray, temperature: float = 1.0) -> FloatArray:
    """log(softmax(x / T)) along the last axis, as ``z - log(sum(exp(z)))``, ``z = _shifted``."""
    z = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        result: FloatArray = z - _log_sum_exp_shifted(z)
    return result


def _softmax_rows(x: FloatArray, temperature: float = 1.0) -> FloatArray:
    """softmax(x / T) along the last axis, as ``exp(z) / sum(exp(z))``, ``z = _shifted``."""
    z = _shifted(x, temperature)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        exps = np.exp(z)
        result: FloatArray = exps / np.sum(exps, axis=-1, keepdims=True)
    return result


def _kl_rows(student: FloatArray, teacher: FloatArray, temperature: float) -> FloatArray:
    """KL(softmax(teacher/T) || softmax(student/T)) for each row, with 0 * log 0 = 0."""
    log_q = _log_softmax_rows(student, temperature)
    log_p = _log_softmax_rows(teacher, temperature)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = p * (log_p - log_q)
    # A class the teacher gives no mass (log p = -inf) contributes exactly 0, even where the
    # student is -inf too (0 * (-inf - -inf) would be NaN). A class where it does, however small
    # (its p may round to 0), against a student at -inf, contributes +inf. NaN is kept.
    terms = np.where(np.isneginf(log_p), 0.0, terms)
    terms = np.where(np.isneginf(log_q) & np.isfinite(log_p), np.inf, terms)
    result: FloatArray = np.sum(terms, axis=-1)
    return result


def _ce_rows(logits: FloatArray, labels: IntArray, counted: BoolArray) -> FloatArray:
    """logsumexp(logits) - logits[label] for each row; rows not counted get an arbitrary value."""
    log_q = _log_softmax_rows(logits)
    safe_labels = np.where(counted, labels, 0)
    picked = np.take_along_axis(log_q, safe_labels[..., np.newaxis], axis=-1)[..., 0]
    result: FloatArray = -picked
    return result


def _reduce(per_row: FloatArray, counted: BoolArray, reduction: str) -> float | FloatArray:
    if reduction == "none":
        result: FloatArray = np.where(counted, per_row, 0.0)
        return result
    # Rows' losses near the float64 limit may sum past it: +inf, as the mathematics says.
    with np.errstate(over="ignore"):
        total = float(np.sum(per_row[counted]))
    if reduction == "sum":
        return total
    count = int(np.count_nonzero(counted))
    return total / count if count > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def softmax(x: npt.ArrayLike, *, temperature: float = 1.0) -> FloatArray:
    """Softmax of ``x / temperature`` along the last axis, in float64.

    ``x`` has shape ``(..., C)`` with ``C >= 1``; the result has the same shape.
    """
    t = _check_temperature(temperature)
    return _softmax_rows(_as_logits(x, "x"), t)


def log_softmax(x: npt.ArrayLike, *, temperature: float = 1.0) -> FloatArray:
    """Log-softmax of ``x / temperature`` along the last axis, in float64.

    Computed as ``z - log(sum(exp(z)))`` with ``z = (x - max(x)) / temperature``, which is
    ``(x/T - max(x/T)) - log(sum(exp(x/T - max(x/T))))``.
    """
    t = _check_temperature(temperature)
    return _log_softmax_rows(_as_logits(x, "x"), t)


def kl_divergence(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> float | FloatArray:
    """KL(softmax(teacher/T) || softmax(student/T)) per row, reduced; no T**2 factor.

    ``reduction`` is ``"mean"`` (a float, the mean over rows, 0.0 for no rows), ``"sum"``
    (a float) or ``"none"`` (a float64 array of shape ``student_logits.shape[:-1]``).
    """
    t = _check_temperature(temperature)
    _check_reduction(reduction)
    student = _as_logits(student_logits, "student_logits")
    teacher = _as_logits(teacher_logits, "teacher_logits")
    if student.shape != teacher.shape:
        raise ValueError(
            f"teacher_logits must have the shape of student_logits {student.shape}, "
            f"got {teacher.shape}"
        )
    counted = np.ones(student.shape[:-1], dtype=np.bool_)
    return _reduce(_kl_rows(student, teacher, t), counted, reduction)


def cross_entropy(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> float | FloatArray:
    """Cross-entropy ``logsumexp(logits) - logits[label]`` per row, reduced.

    Rows whose label equals ``ignore_index`` are not counted (0 under ``"none"``); ``"mean"``
    divides by the number of counted rows and gives 0.0 when none count.
    """
    _check_reduction(reduction)
    x = _as_logits(logits, "logits")
    y = _as_labels(labels, x.shape[:-1])
    counted = _counted_rows(y, ignore_index, x.shape[-1])
    return _reduce(_ce_rows(x, y, counted), counted, reduction)


class _Prepared:
    """Checked float64 inputs of a distillation call, shared by the loss and the gradient."""

    def __init__(
        self,
        student_logits: npt.ArrayLike,
        teacher_logits: npt.ArrayLike,
        labels: npt.ArrayLike | None,
        temperature: float,
        alpha: float,
        reduction: str,
        ignore_index: int,
    ) -> None:
        self.temperature = _check_temperature(temperature)
        self.alpha = _check_alpha(alpha)
        self.reduction = _check_reduction(reduction)
        self.student = _as_logits(student_logits, "student_logits")
        self.teacher = _as_logits(teacher_logits, "teacher_logits")
        if self.student.shape != self.teacher.shape:
            raise ValueError(
                f"teacher_logits must have the shape of student_logits {self.student.shape}, "
                f"got {self.teacher.shape}"
            )
        row_shape = self.student.shape[:-1]
        self.labels: IntArray
        self.counted: BoolArray
        if labels is None:
            if self.alpha < 1.0:
                raise ValueError(f"labels may be None only when alpha == 1, got alpha={alpha!r}")
            self.labels = np.zeros(row_shape, dtype=np.int64)
            self.counted = np.ones(row_shape, dtype=np.bool_)
        else:
            self.labels = _as_labels(labels, row_shape)
            self.counted = _counted_rows(self.labels, ignore_index, self.student.shape[-1])

    def loss(self) -> float | FloatArray:
        t, a = self.temperature, self.alpha
        kl_weight = a * t * t
        ce_weight = 1.0 - a
        # A term whose weight is 0 is not computed, so its inf or NaN cannot leak in via 0 * x.
        per_row = np.zeros(self.student.shape[:-1], dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            if kl_weight != 0.0:
                per_row = per_row + kl_weight * _kl_rows(self.student, self.teacher, t)
            if ce_weight != 0.0:
                per_row = per_row + ce_weight * _ce_rows(self.student, self.labels, self.counted)
        return _reduce(per_row, self.counted, self.reduction)

    def grad(self) -> FloatArray:
        t, a = self.temperature, self.alpha
        ce_weight = 1.0 - a
        grad = np.zeros(self.student.shape, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            if a != 0.0:
                p_student = _softmax_rows(self.student, t)
                p_teacher = _softmax_rows(self.teacher, t)
                grad = grad + (a * t) * (p_student - p_teacher)
            if ce_weight != 0.0:
                onehot = np.zeros(self.student.shape, dtype=np.float64)
                rows_labels = np.where(self.counted, self.labels, 0)[..., np.newaxis]
                np.put_along_axis(onehot, rows_labels, 1.0, axis=-1)
                grad = grad + ce_weight * (_softmax_rows(self.student) - onehot)
        grad = np.where(self.counted[..., np.newaxis], grad, 0.0)
        if self.reduction == "mean":
            count = int(np.count_nonzero(self.counted))
            if count > 0:
                grad = grad / count
        return grad


def distillation_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> float | FloatArray:
    """The distillation loss ``alpha * T**2 * KL + (1 - alpha) * CE`` per row, reduced.

    ``KL`` is ``KL(softmax(teacher/T) || softmax(student/T))`` and ``CE`` the cross-entropy of
    the student logits (at T = 1) against ``labels``. ``labels`` may be ``None`` only when
    ``alpha == 1``. Rows whose label equals ``ignore_index`` count in neither term. A term whose
    weight is 0 is not computed.
    """
    prepared = _Prepared(
        student_logits, teacher_logits, labels, temperature, alpha, reduction, ignore_index
    )
    return prepared.loss()


def distillation_loss_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> tuple[float | FloatArray, FloatArray]:
    """The distillation loss and its gradient with respect to ``student_logits``, in float64.

    The gradient is the closed form
    ``alpha * T * (softmax(s/T) - softmax(t/T)) + (1 - alpha) * (softmax(s) - onehot(labels))``,
    zero on ignored rows and divided by the number of counted rows for ``"mean"``. Under
    ``"none"`` row ``i`` holds the gradient of row ``i``'s loss.
    """
    prepared = _Prepared(
        student_logits, teacher_logits, labels, temperature, alpha, reduction, ignore_index
    )
    return prepared.loss(), prepared.grad()
