"""The functional API: distillation loss, its gradient, KL divergence, cross-entropy, softmax.

Every function takes anything :func:`numpy.asarray` accepts, works along the last axis (each
leading index is one row) and computes in float64 if either input is float64, else float32
(float16 is computed as float32, integer and boolean inputs as float64). C-contiguous float32
and float64 arrays are read in place; other layouts are read row by row without a full copy
where NumPy can reshape them as a view.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, NamedTuple, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core

__all__ = [
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_and_grad",
    "kl_divergence",
    "log_softmax",
    "softmax",
]

Loss = Union[float, NDArray[np.floating[Any]]]
# The reductions to one number, and the one that keeps a value per row: the overloads below
# type a call's result by its ``reduction``.
Reduced = Literal["mean", "sum"]
PerRow = Literal["none"]

_INT64_MIN = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)


def _refuse_masked(x: object, name: str, instead: str) -> None:
    """A masked array's mask would be lost in :func:`numpy.asarray`: refuse it, saying what to
    pass ``instead``."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask would be ignored; pass {instead}")


def _as_logits(x: ArrayLike, name: str) -> NDArray[Any]:
    """``x`` as an array of real numbers with a non-empty last axis (no copy if possible)."""
    _refuse_masked(x, name, f"{name}.filled(-np.inf) to leave the masked classes out")
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(
            f"{name} must have at least one dimension (classes along the last axis), "
            f"got a 0-d array"
        )
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one class, got shape {a.shape}")
    return a


def _compute_dtype(*arrays: NDArray[Any]) -> type[np.floating[Any]]:
    """float32 if every input is a float of at most 32 bits, else float64."""
    if all(a.dtype.kind == "f" and a.dtype.itemsize <= 4 for a in arrays):
        return np.float32
    return np.float64


def _rows(a: NDArray[Any], dtype: type[np.floating[Any]]) -> NDArray[Any]:
    """``a`` as a 2-D ``(rows, classes)`` array of ``dtype``: a view when NumPy can make one."""
    return a.astype(dtype, copy=False).reshape(-1, a.shape[-1])


def _real(value: object, name: str) -> float:
    # A float or an int (not a bool, whose type is not int itself) skips the slower ABC check.
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _reduction(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"reduction must be a str, got {type(value).__name__} {value!r}")
    return value


def _ignore_index(value: object) -> int:
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in 64 bits, got {v}")
    return v


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _as_labels(labels: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.int64]:
    """``labels`` as a flat int64 array, one per row of logits of ``shape``."""
    _refuse_masked(labels, "labels", "labels.filled(ignore_index) to leave the masked rows out")
    y = np.asarray(labels)
    if y.dtype.kind == "O" and y.size and all(_is_int(v) for v in y.flat):
        # NumPy keeps Python ints that fit no integer dtype as objects: out of range.
        worst = max(y.flat, key=lambda v: abs(int(v)))
        raise ValueError(
            f"labels must be in [0, {shape[-1]}) or equal ignore_index, got {int(worst)}"
        )
    if y.dtype.kind not in "iu" and not (y.size == 0 and y.dtype.kind == "f"):
        raise TypeError(f"labels must hold integers, got an array of dtype {y.dtype}")
    expected = shape[:-1]
    if y.shape != expected:
        raise ValueError(
            f"labels must have shape {expected} (logits.shape[:-1]), got shape {y.shape}"
        )
    if y.dtype.kind == "u" and y.size and y.max() > _INT64_MAX:
        raise ValueError(f"labels must be in [0, {shape[-1]}) or equal ignore_index, got {y.max()}")
    return y.astype(np.int64, copy=False).reshape(-1)


def _shaped(loss: Any, shape: tuple[int, ...]) -> Loss:
    """A scalar loss as a Python float; per-row losses in the rows' original shape."""
    if isinstance(loss, float):
        return loss
    return np.asarray(loss).reshape(shape)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64_DTYPE = np.dtype(np.int64)


class _Settings(NamedTuple):
    """Validated loss settings."""

    temperature: float
    alpha: float
    reduction: str
    ignore_index: int


def _settings(
    temperature: object, alpha: object, reduction: object, ignore_index: object
) -> _Settings:
    """Checks loss settings (types here, values by the kernels' own checks)."""
    t = _real(temperature, "temperature")
    a = _real(alpha, "alpha")
    r = _reduction(reduction)
    i = _ignore_index(ignore_index)
    _core.validate(t, a, r)
    return _Settings(t, a, r, i)


def _check_pair(
    student_logits: ArrayLike, teacher_logits: ArrayLike
) -> tuple[tuple[int, ...], NDArray[Any], NDArray[Any]]:
    """The student's shape and both inputs as 2-D arrays of the computation dtype."""
    s, t = student_logits, teacher_logits
    # Fast path, what a training loop passes: 2-D arrays of one float dtype, used as they are.
    if (
        type(s) is np.ndarray
        and type(t) is np.ndarray
        and s.ndim == 2
        and s.shape == t.shape
        and s.shape[1] > 0
        and s.dtype == t.dtype
        and s.dtype in _FAST_DTYPES
    ):
        return s.shape, s, t
    sa = _as_logits(s, "student_logits")
    ta = _as_logits(t, "teacher_logits")
    if sa.shape != ta.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, "
            f"got {sa.shape} and {ta.shape}"
        )
    dtype = _compute_dtype(sa, ta)
    return sa.shape, _rows(sa, dtype), _rows(ta, dtype)


def _labels_for(labels: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[Any] | None:
    if labels is None:
        return None
    if (
        type(labels) is np.ndarray
        and labels.dtype == _INT64_DTYPE
        and labels.shape == shape[:-1]
        and labels.ndim == 1
    ):
        return labels
    return _as_labels(labels, shape)


def _distill(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None,
    settings: _Settings,
    with_grad: bool,
    out: NDArray[Any] | None = None,
) -> tuple[Loss, NDArray[Any] | None]:
    """The loss (and with ``with_grad`` the gradient, in the student's shape)."""
    shape, s2, t2 = _check_pair(student_logits, teacher_logits)
    y = _labels_for(labels, shape)
    out2 = None if out is None else _check_out(out, shape, s2.dtype)
    temperature, alpha, reduction, ignore_index = settings
    loss, grad = _core.distillation(
        s2, t2, y, temperature, alpha, reduction, ignore_index, with_grad, out2
    )
    if len(shape) != 2:
        loss = _shaped(loss, shape[:-1])
        if grad is not None and out is None:
            grad = grad.reshape(shape)
    if out is not None:
        grad = out
    return loss, grad


def _check_out(out: object, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
    """``out`` as a 2-D view, after checking it can receive the gradient."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"out must have dtype {dtype}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out.reshape(-1, shape[-1])


@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: Reduced = ...,
    ignore_index: int = ...,
) -> float: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: PerRow,
    ignore_index: int = ...,
) -> NDArray[np.floating[Any]]: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
) -> Loss: ...
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Loss:
    """Hinton's distillation loss.

    Per row, ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, label)``,
    with CE at T = 1. Rows whose label equals ``ignore_index`` count in neither term.

    Args:
        student_logits: logits of shape ``(..., C)``.
        teacher_logits: logits of the same shape.
        labels: integer class indices of shape ``student_logits.shape[:-1]``; may be ``None``
            only when ``alpha == 1``.
        temperature: softening temperature ``T > 0`` of the KL term.
        alpha: weight of the KL term, in ``[0, 1]``; a term whose weight is 0 is not computed.
        reduction: ``"mean"`` (over counted rows; 0.0 when none count), ``"sum"`` or
            ``"none"`` (an array of shape ``student_logits.shape[:-1]``, ignored rows 0).
        ignore_index: label value marking rows to leave out.

    Returns:
        A Python float for ``"mean"`` and ``"sum"``, else an array in the computation dtype.
    """
    settings = _settings(temperature, alpha, reduction, ignore_index)
    loss, _ = _distill(student_logits, teacher_logits, labels, settings, with_grad=False)
    return loss


@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: Reduced = ...,
    ignore_index: int = ...,
    out: NDArray[Any] | None = ...,
) -> tuple[float, NDArray[Any]]: ...
@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: PerRow,
    ignore_index: int = ...,
    out: NDArray[Any] | None = ...,
) -> tuple[NDArray[np.floating[Any]], NDArray[Any]]: ...
@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    out: NDArray[Any] | None = ...,
) -> tuple[Loss, NDArray[Any]]: ...
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
    out: NDArray[Any] | None = None,
) -> tuple[Loss, NDArray[Any]]:
    """The distillation loss and its gradient with respect to ``student_logits``.

    Takes the arguments of :func:`distillation_loss`, plus ``out``: an optional C-contiguous,
    writeable array of the student's shape and the computation dtype that receives the
    gradient (so a training loop allocates nothing). The gradient is
    ``alpha*T*(softmax(s/T) - softmax(t/T)) + (1 - alpha)*(softmax(s) - onehot(label))``
    per row, divided by the number of counted rows for ``"mean"``; ignored rows get zeros.

    Returns:
        ``(loss, grad)``, with ``grad`` of ``student_logits``' shape (``out`` itself if given).
    """
    settings = _settings(temperature, alpha, reduction, ignore_index)
    loss, grad = _distill(student_logits, teacher_logits, labels, settings, True, out)
    assert grad is not None
    return loss, grad


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = ...,
    reduction: Reduced = ...,
) -> float: ...
@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = ...,
    reduction: PerRow,
) -> NDArray[np.floating[Any]]: ...
@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = ...,
    reduction: str = ...,
) -> Loss: ...
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Loss:
    """``KL(softmax(teacher/T) || softmax(student/T))`` per row (no ``T**2`` factor), reduced.

    ``0 * log 0 = 0``: classes masked with ``-inf`` in both inputs contribute nothing; a class
    the teacher gives mass to and the student masks makes the divergence ``+inf``.
    """
    temperature = _real(temperature, "temperature")
    reduction = _reduction(reduction)
    _core.validate(temperature, 1.0, reduction)
    shape, s2, t2 = _check_pair(student_logits, teacher_logits)
    return _shaped(_core.kl_divergence(s2, t2, temperature, reduction), shape[:-1])


@overload
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: Reduced = ...,
    ignore_index: int = ...,
) -> float: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: PerRow,
    ignore_index: int = ...,
) -> NDArray[np.floating[Any]]: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = ...,
    ignore_index: int = ...,
) -> Loss: ...
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Loss:
    """Cross-entropy ``logsumexp(x) - x[label]`` per row, exact (never clamped), reduced.

    Rows whose label equals ``ignore_index`` do not count (and are 0 with ``"none"``).
    """
    reduction = _reduction(reduction)
    ignore_index = _ignore_index(ignore_index)
    _core.validate(1.0, 0.0, reduction)
    x = _as_logits(logits, "logits")
    y = _as_labels(labels, x.shape)
    result = _core.cross_entropy(_rows(x, _compute_dtype(x)), y, reduction, ignore_index)
    return _shaped(result, x.shape[:-1])


def _softmax(x: ArrayLike, temperature: float, log: bool) -> NDArray[np.floating[Any]]:
    temperature = _real(temperature, "temperature")
    _core.validate(temperature, 0.0, "mean")
    a = _as_logits(x, "x")
    out: NDArray[np.floating[Any]] = _core.softmax(_rows(a, _compute_dtype(a)), temperature, log)
    return out.reshape(a.shape)


def softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``softmax(x / temperature)`` along the last axis, in float32 or float64 as computed."""
    return _softmax(x, temperature, log=False)


def log_softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``log(softmax(x / temperature))`` along the last axis, computed as
    ``(x - max)/T - log(sum(exp((x - max)/T)))``, never as a log of a rounded probability."""
    return _softmax(x, temperature, log=True)
