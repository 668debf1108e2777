"""A plain NumPy float64 implementation of the kdloss functions.

This module is the oracle for the test suite and the baseline for the benchmarks. It follows the
same semantics as the native functions (see the package README) but favours clarity over speed:
every function converts its inputs to float64, computes whole arrays with NumPy, and always
returns float64 results. It is written from the definitions below, not from the kernels.

Rows are all leading indices of an array of shape ``(..., C)``; softmax, log-softmax, the
divergences and the cross-entropy act along the last axis.

The objectives, per counted row, with ``p = softmax(teacher/T)``, ``q = softmax(student/T)``,
sums over classes and ``0 * log 0 = 0``:

- ``"forward_kl"``: ``KL(p || q)``; ``"reverse_kl"``: ``KL(q || p)``.
- ``"jsd"``: ``beta * KL(p || m) + (1 - beta) * KL(q || m)``, ``m = beta*p + (1 - beta)*q``,
  with ``log m`` formed in log space; at exactly ``beta = 0`` it is ``KL(p || q)`` and at
  ``beta = 1`` ``KL(q || p)`` (the formula itself tends to 0 at both ends, so the value jumps).
- ``"tvd"``: ``0.5 * sum|p - q|``, whose derivative in ``q`` is taken as 0 where ``p == q``.
- ``"skew_kl"``: ``KL(p || skew*p + (1 - skew)*q)``; ``"skew_reverse_kl"``:
  ``KL(q || skew*q + (1 - skew)*p)``.
- ``loss = alpha * [T**2] * divergence + (1 - alpha) * ce``, the ``T**2`` only with
  ``t2_scale``, and ``ce = (1 - eps) * w[y] * (-log q1[y]) + (eps / C) * sum_c w[c] *
  (-log q1[c])`` at T = 1 (PyTorch's label smoothing and class weights), a class of weight 0
  contributing 0 even where ``q1`` is 0.

A row counts if its ``mask`` entry is true and its label is not ``ignore_index``. ``"mean"``
divides the divergence sum by the number of counted rows and the cross-entropy sum by their
``sum w[y]`` (a term whose divisor is 0 is 0.0); ``normalizer=N`` divides both sums by ``N``
instead and ``normalizer=(n_div, n_ce)`` each by its own. Gradients are the closed forms of the
derivative of the returned loss with respect to the student logits; rows that do not count get
zero rows. Forward KL's is ``q - p``; every other divergence's is ``q_j (h_j - sum_i q_i h_i)``
with ``h`` its derivative in ``q``, so a class where ``q`` is 0 gets 0 from it. A row whose loss
is +inf gets what the closed form gives there.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal, SupportsFloat, Union, overload

import numpy as np
import numpy.typing as npt

from .components import Components

__all__ = [
    "DIVERGENCES",
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_and_grad",
    "divergence",
    "divergence_and_grad",
    "kl_divergence",
    "log_softmax",
    "softmax",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
# A reduced loss or one per row (float64 here; the type is shared with kdloss.Components).
Loss = Union[float, npt.NDArray[np.floating[Any]]]
# normalizer: one divisor for both terms, or (divergence divisor, cross-entropy divisor).
Normalizer = Union[float, tuple[float, float], list[float], None]

_REDUCTIONS = ("mean", "sum", "none")
_INT64_MAX = int(np.iinfo(np.int64).max)

#: The divergences, by the names the ``divergence`` / ``kind`` option takes.
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_reverse_kl")


# ---------------------------------------------------------------------------------------------
# Argument checks and conversions
# ---------------------------------------------------------------------------------------------


def _as_float(value: SupportsFloat, name: str) -> float:
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


# ---------------------------------------------------------------------------------------------
# Checks of the objectives' options
# ---------------------------------------------------------------------------------------------


def _real_option(value: object, name: str) -> float:
    """A real number (not a bool) as a float; TypeError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return _as_float(value, name)


def _check_fraction(value: object, name: str) -> float:
    """A real number in [0, 1] (beta, skew, label_smoothing)."""
    number = _real_option(value, name)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _check_kind(kind: object, name: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"{name} must be a str, got {type(kind).__name__} {kind!r}")
    if kind not in DIVERGENCES:
        names = ", ".join(repr(k) for k in DIVERGENCES)
        raise ValueError(f"{name} must be one of {names}, got {kind!r}")
    return kind


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_class_weight(class_weight: npt.ArrayLike | None, num_classes: int) -> FloatArray | None:
    """A float64 copy of ``class_weight``: length C, finite, >= 0."""
    if class_weight is None:
        return None
    array = np.asarray(class_weight)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"class_weight must hold real numbers, got dtype {array.dtype}")
    if array.shape != (num_classes,):
        raise ValueError(
            f"class_weight must have shape ({num_classes},), one weight per class, "
            f"got shape {array.shape}"
        )
    weights: FloatArray = np.array(array, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(weights)):
        raise ValueError("class_weight must be finite, got a NaN or infinite entry")
    if np.any(weights < 0.0):
        raise ValueError(f"class_weight must be >= 0, got {float(weights.min())!r}")
    return weights


def _check_mask(mask: npt.ArrayLike | None, row_shape: tuple[int, ...]) -> BoolArray:
    """The rows ``mask`` selects (all of them when it is None)."""
    if mask is None:
        return np.ones(row_shape, dtype=np.bool_)
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {array.dtype}")
    if array.shape != row_shape:
        raise ValueError(f"mask must have shape {row_shape}, got shape {array.shape}")
    selected: BoolArray = array.copy()
    return selected


def _positive(value: object, name: str) -> float:
    number = _real_option(value, name)
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


def _check_normalizer(
    normalizer: object, reduction: str, pair_allowed: bool
) -> tuple[float, float] | None:
    """``(divergence divisor, cross-entropy divisor)``, or None to divide as ``reduction``
    says."""
    if normalizer is None:
        return None
    if reduction == "none":
        raise ValueError("normalizer must be None with reduction='none'")
    if isinstance(normalizer, (tuple, list)):
        if not pair_allowed:
            raise TypeError(
                f"normalizer must be a real number here, got {type(normalizer).__name__}"
            )
        if len(normalizer) != 2:
            raise ValueError(
                f"normalizer must be a number or a pair (n_div, n_ce), got {len(normalizer)} values"
            )
        return _positive(normalizer[0], "normalizer[0]"), _positive(normalizer[1], "normalizer[1]")
    number = _positive(normalizer, "normalizer")
    return number, number


# ---------------------------------------------------------------------------------------------
# The objectives, row by row (float64 in, float64 out, no checks)
# ---------------------------------------------------------------------------------------------


def _kl_from_logs(log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    """``KL(a || b) = sum a * (log a - log b)`` for each row, from the logs, ``0 * log 0 = 0``."""
    a = np.exp(log_a)
    with np.errstate(invalid="ignore"):
        terms = a * (log_a - log_b)
    # A class a gives no mass (log a = -inf) contributes exactly 0, even where b is 0 too
    # (0 * (-inf - -inf) would be NaN). A class where it does, however small (its a may round
    # to 0), against b = 0, contributes +inf. NaN is kept.
    terms = np.where(np.isneginf(log_a), 0.0, terms)
    terms = np.where(np.isneginf(log_b) & np.isfinite(log_a), np.inf, terms)
    result: FloatArray = np.sum(terms, axis=-1)
    return result


def _log_mix(weight: float, log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    """``log(weight * a + (1 - weight) * b)`` from ``log a`` and ``log b``, in log space.

    A class where both underflow keeps a finite log (or -inf where both are exactly 0), never
    the log of a rounded 0. At weight 0 it is ``log b`` and at 1 ``log a``, exactly.
    """
    if weight == 0.0:
        return log_b
    if weight == 1.0:
        return log_a
    with np.errstate(invalid="ignore"):
        result: FloatArray = np.logaddexp(math.log(weight) + log_a, math.log1p(-weight) + log_b)
    return result


def _through_softmax(q: FloatArray, h: FloatArray) -> FloatArray:
    """``q_j * (h_j - sum_i q_i h_i)``: the gradient with respect to ``z`` of a function of
    ``q = softmax(z)`` whose gradient with respect to ``q`` is ``h`` (up to a constant per row).

    A class with ``q_j = 0`` contributes 0 and gets 0, whatever its ``h_j`` (``q log q -> 0``).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        qh = np.where(q == 0.0, 0.0, q * h)
        total = np.sum(qh, axis=-1, keepdims=True)
        result: FloatArray = np.where(q == 0.0, 0.0, qh - q * total)
    return result


class _Distributions:
    """``q = softmax(student/T)``, ``p = softmax(teacher/T)`` and their logs, each computed
    when first used."""

    def __init__(self, student: FloatArray, teacher: FloatArray, temperature: float) -> None:
        self._student = student
        self._teacher = teacher
        self._temperature = temperature

    @functools.cached_property
    def log_q(self) -> FloatArray:
        return _log_softmax_rows(self._student, self._temperature)

    @functools.cached_property
    def log_p(self) -> FloatArray:
        return _log_softmax_rows(self._teacher, self._temperature)

    @functools.cached_property
    def q(self) -> FloatArray:
        return _softmax_rows(self._student, self._temperature)

    @functools.cached_property
    def p(self) -> FloatArray:
        return _softmax_rows(self._teacher, self._temperature)


# Each divergence: its value per row, and its gradient with respect to z = student / T, written
# as q_j (h_j - sum_i q_i h_i) with h its derivative in q. ``w`` is beta for the JSD, skew for
# the skewed KLs, unused by the others.


def _forward_kl(d: _Distributions, w: float) -> FloatArray:
    return _kl_from_logs(d.log_p, d.log_q)


def _forward_kl_grad(d: _Distributions, w: float) -> FloatArray:
    # h = -p / q: through the softmax, q - p.
    result: FloatArray = d.q - d.p
    return result


def _reverse_kl(d: _Distributions, w: float) -> FloatArray:
    return _kl_from_logs(d.log_q, d.log_p)


def _reverse_kl_grad(d: _Distributions, w: float) -> FloatArray:
    # h = log q - log p + 1.
    return _through_softmax(d.q, d.log_q - d.log_p)


def _jsd(d: _Distributions, beta: float) -> FloatArray:
    log_m = _log_mix(beta, d.log_p, d.log_q)
    result: FloatArray = beta * _kl_from_logs(d.log_p, log_m) + (1.0 - beta) * _kl_from_logs(
        d.log_q, log_m
    )
    return result


def _jsd_grad(d: _Distributions, beta: float) -> FloatArray:
    # beta sum p log p + (1 - beta) sum q log q - sum m log m: h = (1 - beta)(log q - log m).
    log_m = _log_mix(beta, d.log_p, d.log_q)
    result: FloatArray = (1.0 - beta) * _through_softmax(d.q, d.log_q - log_m)
    return result


def _tvd(d: _Distributions, w: float) -> FloatArray:
    result: FloatArray = 0.5 * np.sum(np.abs(d.q - d.p), axis=-1)
    return result


def _tvd_grad(d: _Distributions, w: float) -> FloatArray:
    # h = 0.5 sign(q - p), taken as 0 where q == p (the subgradient 0 of |x| at 0).
    return _through_softmax(d.q, 0.5 * np.sign(d.q - d.p))


def _skew_kl(d: _Distributions, skew: float) -> FloatArray:
    return _kl_from_logs(d.log_p, _log_mix(skew, d.log_p, d.log_q))


def _skew_kl_grad(d: _Distributions, skew: float) -> FloatArray:
    # -sum p log m, m = skew p + (1 - skew) q: h = -(1 - skew) p / m, with p / m <= 1 / skew.
    log_m = _log_mix(skew, d.log_p, d.log_q)
    ratio = np.where(np.isneginf(d.log_p), 0.0, np.exp(d.log_p - log_m))
    result: FloatArray = -(1.0 - skew) * _through_softmax(d.q, ratio)
    return result


def _skew_reverse_kl(d: _Distributions, skew: float) -> FloatArray:
    return _kl_from_logs(d.log_q, _log_mix(skew, d.log_q, d.log_p))


def _skew_reverse_kl_grad(d: _Distributions, skew: float) -> FloatArray:
    # sum q (log q - log m), m = skew q + (1 - skew) p: h = log q + 1 - log m - skew q / m.
    log_m = _log_mix(skew, d.log_q, d.log_p)
    ratio = np.where(np.isneginf(d.log_q), 0.0, np.exp(d.log_q - log_m))
    return _through_softmax(d.q, d.log_q - log_m - skew * ratio)


_Form = Callable[[_Distributions, float], FloatArray]
_FORMS: dict[str, tuple[_Form, _Form]] = {
    "forward_kl": (_forward_kl, _forward_kl_grad),
    "reverse_kl": (_reverse_kl, _reverse_kl_grad),
    "jsd": (_jsd, _jsd_grad),
    "tvd": (_tvd, _tvd_grad),
    "skew_kl": (_skew_kl, _skew_kl_grad),
    "skew_reverse_kl": (_skew_reverse_kl, _skew_reverse_kl_grad),
}


def _resolved(kind: str, beta: float, skew: float) -> tuple[str, float]:
    """The divergence a setting computes and its parameter: JSD is forward KL at exactly
    beta = 0 and reverse KL at beta = 1 (TRL's convention); a skew of 0 makes the skewed KLs
    the plain ones (which their formulas reach only as a limit, through p / q)."""
    if kind == "jsd" and beta in (0.0, 1.0):
        return ("forward_kl" if beta == 0.0 else "reverse_kl"), beta
    if kind in ("skew_kl", "skew_reverse_kl") and skew == 0.0:
        return ("forward_kl" if kind == "skew_kl" else "reverse_kl"), skew
    return kind, beta if kind == "jsd" else skew


def _divergence_rows(
    kind: str, d: _Distributions, beta: float, skew: float, gradient: bool
) -> FloatArray:
    """Each row's divergence ``kind``, or with ``gradient`` its gradient with respect to
    ``z = student / T``."""
    name, w = _resolved(kind, beta, skew)
    form = _FORMS[name][1 if gradient else 0]
    # Masked classes, NaN and infinities propagate quietly, as the formulas say.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return form(d, w)


def _label_weights(
    labels: IntArray | None, counted: BoolArray, class_weight: FloatArray | None
) -> FloatArray:
    """``w[y]`` for each counted row, 0 for the others and everywhere without labels."""
    if labels is None:
        return np.zeros(counted.shape, dtype=np.float64)
    if class_weight is None:
        ones: FloatArray = counted.astype(np.float64)
        return ones
    picked: FloatArray = np.where(counted, class_weight[np.where(counted, labels, 0)], 0.0)
    return picked


def _weighted_nll(weights: FloatArray, log_q: FloatArray) -> FloatArray:
    """``weights * (-log_q)``, 0 where the weight is 0 even where ``log_q`` is -inf."""
    with np.errstate(invalid="ignore"):
        terms = weights * -log_q
    result: FloatArray = np.where(weights == 0.0, 0.0, terms)
    return result


class _CrossEntropy:
    """The cross-entropy term at T = 1 with label smoothing ``eps`` and class weights ``w``:
    per row ``(1 - eps) w[y] (-log q[y]) + (eps / C) sum_c w[c] (-log q[c])``. A part whose
    weight (``1 - eps`` or ``eps``) is 0 is not computed; rows not counted get arbitrary
    values."""

    def __init__(
        self,
        logits: FloatArray,
        labels: IntArray,
        counted: BoolArray,
        label_weight: FloatArray,
        class_weight: FloatArray | None,
        label_smoothing: float,
    ) -> None:
        self.logits = logits
        self.labels = np.where(counted, labels, 0)[..., np.newaxis]
        self.label_weight = label_weight
        num_classes = logits.shape[-1]
        self.weights = np.ones(num_classes) if class_weight is None else class_weight
        self.eps = label_smoothing

    def rows(self) -> FloatArray:
        eps, num_classes = self.eps, self.logits.shape[-1]
        log_q = _log_softmax_rows(self.logits)
        value = np.zeros(self.label_weight.shape, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            if eps != 1.0:
                picked = np.take_along_axis(log_q, self.labels, axis=-1)[..., 0]
                value = value + (1.0 - eps) * _weighted_nll(self.label_weight, picked)
            if eps != 0.0:
                smooth = np.sum(_weighted_nll(self.weights, log_q), axis=-1)
                value = value + (eps / num_classes) * smooth
        return value

    def grad(self) -> FloatArray:
        """``q * ((1 - eps) w[y] + (eps / C) sum(w)) - (1 - eps) w[y] onehot(y) - (eps / C) w``
        with ``q = softmax(logits)``."""
        eps, num_classes = self.eps, self.logits.shape[-1]
        q = _softmax_rows(self.logits)
        coefficient = (1.0 - eps) * self.label_weight + (eps / num_classes) * np.sum(self.weights)
        grad = q * coefficient[..., np.newaxis]
        if eps != 1.0:
            onehot = np.zeros(self.logits.shape, dtype=np.float64)
            np.put_along_axis(onehot, self.labels, 1.0, axis=-1)
            grad = grad - ((1.0 - eps) * self.label_weight)[..., np.newaxis] * onehot
        if eps != 0.0:
            grad = grad - (eps / num_classes) * self.weights
        result: FloatArray = grad
        return result


# ---------------------------------------------------------------------------------------------
# One call: its checked inputs, the terms per row, the reductions and the gradient
# ---------------------------------------------------------------------------------------------


class _Call:
    """The checked float64 inputs and options of one call, with each row's terms computed.

    ``loss = alpha * [T**2] * divergence + (1 - alpha) * cross_entropy``; ``divergence()`` is
    the case ``alpha = 1`` without ``T**2``, ``cross_entropy()`` the case ``alpha = 0``.
    """

    def __init__(
        self,
        student: FloatArray,
        teacher: FloatArray | None,
        labels: npt.ArrayLike | None,
        *,
        temperature: float,
        alpha: float,
        kind: str,
        beta: float,
        skew: float,
        t2_scale: bool,
        label_smoothing: float,
        class_weight: npt.ArrayLike | None,
        reduction: str,
        ignore_index: int,
        mask: npt.ArrayLike | None,
        normalizer: object,
        pair_normalizer: bool,
    ) -> None:
        self.temperature = temperature
        self.alpha = alpha
        self.reduction = reduction
        self.t2_scale = t2_scale
        self.normalizer = _check_normalizer(normalizer, reduction, pair_normalizer)
        row_shape = student.shape[:-1]
        num_classes = student.shape[-1]
        weights = _check_class_weight(class_weight, num_classes)
        self.counted = _check_mask(mask, row_shape)
        y: IntArray | None = None
        if labels is None:
            if alpha < 1.0:
                raise ValueError(f"labels may be None only when alpha == 1, got alpha={alpha!r}")
        else:
            y = _as_labels(labels, row_shape)
            self.counted = self.counted & _counted_rows(y, ignore_index, num_classes)
        self.label_weight = _label_weights(y, self.counted, weights)

        self.shape = student.shape
        self.kind, self.beta, self.skew = kind, beta, skew
        # A term whose weight is 0 is not computed (with alpha = 0 the teacher is not read), so
        # its inf or NaN cannot leak in through 0 * x.
        self.distributions: _Distributions | None = None
        self.div_rows = np.zeros(row_shape, dtype=np.float64)
        if alpha != 0.0:
            assert teacher is not None
            self.distributions = _Distributions(student, teacher, temperature)
            self.div_rows = _divergence_rows(kind, self.distributions, beta, skew, gradient=False)
        self.cross_entropy: _CrossEntropy | None = None
        self.ce_rows = np.zeros(row_shape, dtype=np.float64)
        if alpha != 1.0:
            assert y is not None
            self.cross_entropy = _CrossEntropy(
                student, y, self.counted, self.label_weight, weights, label_smoothing
            )
            self.ce_rows = self.cross_entropy.rows()

    def _weights(self) -> tuple[float, float]:
        """The factors of the two reduced terms in the loss: ``alpha * [T**2]``, ``1 - alpha``."""
        t = self.temperature
        return self.alpha * (t * t if self.t2_scale else 1.0), 1.0 - self.alpha

    def _divisors(self) -> tuple[float, float]:
        """What the divergence sum and the cross-entropy sum are divided by (0: the term is 0)."""
        if self.reduction == "none":
            return 1.0, 1.0
        if self.normalizer is not None:
            return self.normalizer
        if self.reduction == "sum":
            return 1.0, 1.0
        return float(np.count_nonzero(self.counted)), float(np.sum(self.label_weight))

    def components(self) -> Components:
        div_weight, ce_weight = self._weights()
        if self.reduction == "none":
            div: Loss = np.where(self.counted, self.div_rows, 0.0)
            ce: Loss = np.where(self.counted, self.ce_rows, 0.0)
            loss: Loss = np.zeros(self.counted.shape, dtype=np.float64)
            count: int | BoolArray = self.counted.copy()
            weight_sum: Loss = self.label_weight.copy()
        else:
            n_div, n_ce = self._divisors()
            # Rows' terms near the float64 limit may sum past it: +inf, as the mathematics says.
            with np.errstate(over="ignore", invalid="ignore"):
                div_sum = float(np.sum(self.div_rows[self.counted]))
                ce_sum = float(np.sum(self.ce_rows[self.counted]))
            div = div_sum / n_div if n_div > 0.0 else 0.0
            ce = ce_sum / n_ce if n_ce > 0.0 else 0.0
            loss = 0.0
            count = int(np.count_nonzero(self.counted))
            weight_sum = float(np.sum(self.label_weight))
        with np.errstate(over="ignore", invalid="ignore"):
            if div_weight != 0.0:
                loss = loss + div_weight * div
            if ce_weight != 0.0:
                loss = loss + ce_weight * ce
        if self.reduction == "none":
            # NumPy turns arithmetic on 0-d arrays (the rows of 1-D logits) into scalars.
            loss = np.asarray(loss, dtype=np.float64)
        return Components(loss, div, ce, count, weight_sum)

    def grad(self) -> FloatArray:
        """``d(loss)/d(student)``: the divergence's gradient in z times ``alpha * [T**2] / T``
        plus the cross-entropy's times ``1 - alpha``, each over its divisor."""
        n_div, n_ce = self._divisors()
        t = self.temperature
        grad = np.zeros(self.shape, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            if self.distributions is not None and n_div > 0.0:
                scale = self.alpha * (t if self.t2_scale else 1.0 / t)
                d = self.distributions
                grad_z = _divergence_rows(self.kind, d, self.beta, self.skew, gradient=True)
                grad = grad + scale * grad_z / n_div
            if self.cross_entropy is not None and n_ce > 0.0:
                grad = grad + (1.0 - self.alpha) * self.cross_entropy.grad() / n_ce
        result: FloatArray = np.where(self.counted[..., np.newaxis], grad, 0.0)
        return result


def _student_teacher(
    student_logits: npt.ArrayLike, teacher_logits: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    student = _as_logits(student_logits, "student_logits")
    teacher = _as_logits(teacher_logits, "teacher_logits")
    if student.shape != teacher.shape:
        raise ValueError(
            f"teacher_logits must have the shape of student_logits {student.shape}, "
            f"got {teacher.shape}"
        )
    return student, teacher


def _distillation_call(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    temperature: float,
    alpha: float,
    divergence: str,
    beta: float,
    skew: float,
    t2_scale: bool,
    label_smoothing: float,
    class_weight: npt.ArrayLike | None,
    reduction: str,
    ignore_index: int,
    mask: npt.ArrayLike | None,
    normalizer: Normalizer,
) -> _Call:
    t = _check_temperature(temperature)
    a = _check_alpha(alpha)
    _check_reduction(reduction)
    kind = _check_kind(divergence, "divergence")
    b = _check_fraction(beta, "beta")
    lam = _check_fraction(skew, "skew")
    t2 = _check_flag(t2_scale, "t2_scale")
    eps = _check_fraction(label_smoothing, "label_smoothing")
    student, teacher = _student_teacher(student_logits, teacher_logits)
    return _Call(
        student,
        teacher,
        labels,
        temperature=t,
        alpha=a,
        kind=kind,
        beta=b,
        skew=lam,
        t2_scale=t2,
        label_smoothing=eps,
        class_weight=class_weight,
        reduction=reduction,
        ignore_index=ignore_index,
        mask=mask,
        normalizer=normalizer,
        pair_normalizer=True,
    )


def _divergence_call(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    kind: str,
    temperature: float,
    beta: float,
    skew: float,
    reduction: str,
    mask: npt.ArrayLike | None,
    normalizer: float | None,
) -> _Call:
    t = _check_temperature(temperature)
    _check_reduction(reduction)
    name = _check_kind(kind, "kind")
    b = _check_fraction(beta, "beta")
    lam = _check_fraction(skew, "skew")
    student, teacher = _student_teacher(student_logits, teacher_logits)
    return _Call(
        student,
        teacher,
        None,
        temperature=t,
        alpha=1.0,
        kind=name,
        beta=b,
        skew=lam,
        t2_scale=False,
        label_smoothing=0.0,
        class_weight=None,
        reduction=reduction,
        ignore_index=-100,
        mask=mask,
        normalizer=normalizer,
        pair_normalizer=False,
    )


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
) -> Loss:
    """KL(softmax(teacher/T) || softmax(student/T)) per row, reduced; no T**2 factor.

    ``reduction`` is ``"mean"`` (a float, the mean over rows, 0.0 for no rows), ``"sum"``
    (a float) or ``"none"`` (a float64 array of shape ``student_logits.shape[:-1]``).
    """
    return divergence(
        student_logits,
        teacher_logits,
        kind="forward_kl",
        temperature=temperature,
        reduction=reduction,
    )


def divergence(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    *,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    reduction: str = "mean",
    mask: npt.ArrayLike | None = None,
    normalizer: float | None = None,
) -> Loss:
    """The divergence ``kind`` (one of :data:`DIVERGENCES`) between ``p = softmax(teacher/T)``
    and ``q = softmax(student/T)`` per row, reduced; no ``T**2``, no cross-entropy.

    ``mask`` (booleans of shape ``student_logits.shape[:-1]``) selects the rows that count.
    ``"mean"`` divides the sum over counted rows by their number (0.0 when none count),
    ``normalizer=N`` divides the sum by ``N`` instead; ``"none"`` gives each row (0 where the
    mask is false). See the module docstring for the formulas.
    """
    call = _divergence_call(
        student_logits, teacher_logits, kind, temperature, beta, skew, reduction, mask, normalizer
    )
    return call.components().loss


def divergence_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    *,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    reduction: str = "mean",
    mask: npt.ArrayLike | None = None,
    normalizer: float | None = None,
) -> tuple[Loss, FloatArray]:
    """:func:`divergence` and its gradient with respect to ``student_logits``, in float64.

    Per row, ``q * (h - sum(q * h)) / T`` with ``h`` the divergence's derivative in ``q``
    (forward KL: ``(q - p) / T``; reverse KL: ``h = log q - log p``; JSD:
    ``(1 - beta) * (log q - log m)``; TVD: ``0.5 * sign(q - p)``, 0 at ties; skew KL:
    ``-(1 - skew) * p / m``; skew reverse KL: ``log q - log m - skew * q / m``), divided as
    the loss is; zero on rows that do not count.
    """
    call = _divergence_call(
        student_logits, teacher_logits, kind, temperature, beta, skew, reduction, mask, normalizer
    )
    return call.components().loss, call.grad()


def cross_entropy(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    mask: npt.ArrayLike | None = None,
    normalizer: float | None = None,
) -> Loss:
    """Cross-entropy per row with PyTorch's label smoothing and class weights, reduced.

    Per counted row, ``(1 - eps) * w[y] * (-log q[y]) + (eps / C) * sum_c w[c] * (-log q[c])``,
    ``q = softmax(logits)``, ``eps = label_smoothing`` in [0, 1], ``w = class_weight`` (length
    C, finite, >= 0; all ones by default); a class of weight 0 contributes 0. A row counts if
    its label is not ``ignore_index`` and its ``mask`` entry is true. ``"mean"`` divides by
    ``sum w[y]`` over counted rows (their number without weights; 0.0 when that is 0),
    ``normalizer=N`` by ``N``; ``"none"`` gives each row (0 where it does not count).
    """
    _check_reduction(reduction)
    eps = _check_fraction(label_smoothing, "label_smoothing")
    x = _as_logits(logits, "logits")
    call = _Call(
        x,
        None,
        labels,
        temperature=1.0,
        alpha=0.0,
        kind="forward_kl",
        beta=0.5,
        skew=0.1,
        t2_scale=False,
        label_smoothing=eps,
        class_weight=class_weight,
        reduction=reduction,
        ignore_index=ignore_index,
        mask=mask,
        normalizer=normalizer,
        pair_normalizer=False,
    )
    return call.components().loss


@overload
def distillation_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
) -> Loss: ...
@overload
def distillation_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[True],
) -> Components: ...
@overload
def distillation_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: bool = ...,
) -> Loss | Components: ...
def distillation_loss(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    t2_scale: bool = True,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    mask: npt.ArrayLike | None = None,
    normalizer: Normalizer = None,
    return_components: bool = False,
) -> Loss | Components:
    """The distillation loss ``alpha * [T**2] * div + (1 - alpha) * CE`` per row, reduced.

    ``div`` is the divergence named by ``divergence`` (one of :data:`DIVERGENCES`, with
    ``beta`` for ``"jsd"`` and ``skew`` for the skewed KLs) between ``softmax(teacher/T)`` and
    ``softmax(student/T)``; ``T**2`` applies only with ``t2_scale``. ``CE`` is
    :func:`cross_entropy` of the student logits (at T = 1) against ``labels``, with
    ``label_smoothing`` and ``class_weight``. ``labels`` may be ``None`` only when
    ``alpha == 1``. A row counts in both terms if its label is not ``ignore_index`` and its
    ``mask`` entry is true. ``"mean"`` divides the divergence sum by the counted rows and the CE
    sum by their ``sum w[y]``; ``normalizer=N`` divides both sums by ``N``, and
    ``normalizer=(n_div, n_ce)`` each by its own (not allowed with ``"none"``). A term whose
    weight is 0 is not computed. With ``return_components`` the result is a
    :class:`~kdloss.Components`.
    """
    call = _distillation_call(
        student_logits,
        teacher_logits,
        labels,
        temperature,
        alpha,
        divergence,
        beta,
        skew,
        t2_scale,
        label_smoothing,
        class_weight,
        reduction,
        ignore_index,
        mask,
        normalizer,
    )
    parts = call.components()
    return parts if return_components else parts.loss


@overload
def distillation_loss_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
) -> tuple[Loss, FloatArray]: ...
@overload
def distillation_loss_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[True],
) -> tuple[Components, FloatArray]: ...
@overload
def distillation_loss_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    label_smoothing: float = ...,
    class_weight: npt.ArrayLike | None = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: npt.ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: bool = ...,
) -> tuple[Loss | Components, FloatArray]: ...
def distillation_loss_and_grad(
    student_logits: npt.ArrayLike,
    teacher_logits: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    t2_scale: bool = True,
    label_smoothing: float = 0.0,
    class_weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    mask: npt.ArrayLike | None = None,
    normalizer: Normalizer = None,
    return_components: bool = False,
) -> tuple[Loss | Components, FloatArray]:
    """:func:`distillation_loss` and its gradient with respect to ``student_logits``, float64.

    The gradient is the closed form: ``alpha * [T**2] / T`` times the divergence's gradient in
    ``z = s / T`` (see :func:`divergence_and_grad`; forward KL gives
    ``alpha * T * (softmax(s/T) - softmax(t/T))`` with ``t2_scale``), plus ``1 - alpha`` times
    the cross-entropy's, ``q * ((1 - eps) * w[y] + (eps / C) * sum(w)) - (1 - eps) * w[y] *
    onehot(y) - (eps / C) * w`` with ``q = softmax(s)``, each divided as its term is; zero on
    rows that do not count. Under ``"none"`` row ``i`` holds the gradient of row ``i``'s loss.
    """
    call = _distillation_call(
        student_logits,
        teacher_logits,
        labels,
        temperature,
        alpha,
        divergence,
        beta,
        skew,
        t2_scale,
        label_smoothing,
        class_weight,
        reduction,
        ignore_index,
        mask,
        normalizer,
    )
    parts = call.components()
    return (parts if return_components else parts.loss), call.grad()
