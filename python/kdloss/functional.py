"""The functional API: distillation loss, its gradient, KL divergence, cross-entropy, softmax.

Every array argument may be a NumPy array, a PyTorch tensor or other object with
``__dlpack__`` on the CPU (a JAX array; read without a copy, through ``Tensor.numpy()`` or
:func:`numpy.from_dlpack`; PyTorch's bfloat16 is widened to float32), or anything
:func:`numpy.asarray` accepts. Every function works along the last axis (each leading index
is one row) and computes in float64 if either input is float64, else float32 (float16 is
computed as float32, integer and boolean inputs as float64). C-contiguous float32 and float64
arrays are read in place; other layouts are read row by row without a full copy where NumPy
can reshape them as a view.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._arrays import as_array, as_out

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
    """``x`` as an array of real numbers (no copy if possible); shapes are checked natively."""
    _refuse_masked(x, name, f"{name}.filled(-np.inf) to leave the masked classes out")
    a = as_array(x, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {a.dtype}")
    return a


def _compute_dtype(*arrays: NDArray[Any]) -> type[np.floating[Any]]:
    """float32 if every input is a float of at most 32 bits, else float64."""
    if all(a.dtype.kind == "f" and a.dtype.itemsize <= 4 for a in arrays):
        return np.float32
    return np.float64


def _real(value: object, name: str) -> float:
    # A float or an int (not a bool, whose type is not int itself) skips the slower ABC check.
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} must be finite, got {type(value).__name__} too large for a float"
        ) from None


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


def _as_labels(labels: ArrayLike, classes: int, ignore_index: int) -> NDArray[np.int64]:
    """``labels`` as an int64 array; its shape and range are checked natively."""
    _refuse_masked(labels, "labels", "labels.filled(ignore_index) to leave the masked rows out")
    y = as_array(labels, "labels")
    if y.dtype.kind == "O" and y.size and all(_is_int(v) for v in y.flat):
        # NumPy keeps Python ints that fit no integer dtype as objects: out of range.
        worst = max(y.flat, key=lambda v: abs(int(v)))
        raise ValueError(_core.label_error(classes, ignore_index, str(int(worst))))
    if y.dtype.kind not in "iu" and not (y.size == 0 and y.dtype.kind == "f"):
        raise TypeError(f"labels must hold integers, got an array of dtype {y.dtype}")
    if y.dtype.kind == "u" and y.size and y.max() > _INT64_MAX:
        raise ValueError(_core.label_error(classes, ignore_index, str(y.max())))
    return y.astype(np.int64, copy=False)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64_DTYPE = np.dtype(np.int64)


def _settings(
    temperature: object, alpha: object, reduction: object, ignore_index: object
) -> _core.Settings:
    """Loss settings: their types checked here, their values by ``_core.Settings``."""
    return _core.Settings(
        _real(temperature, "temperature"),
        _real(alpha, "alpha"),
        _reduction(reduction),
        _ignore_index(ignore_index),
    )


def _pair(
    student_logits: ArrayLike, teacher_logits: ArrayLike
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Both inputs as arrays of the computation dtype."""
    s, t = student_logits, teacher_logits
    # Fast path, what a training loop passes: arrays of one float dtype, used as they are.
    if (
        type(s) is np.ndarray
        and type(t) is np.ndarray
        and s.dtype == t.dtype
        and s.dtype in _FAST_DTYPES
    ):
        return s, t
    sa = _as_logits(s, "student_logits")
    ta = _as_logits(t, "teacher_logits")
    dtype = _compute_dtype(sa, ta)
    return sa.astype(dtype, copy=False), ta.astype(dtype, copy=False)


def _labels_for(
    labels: ArrayLike | None, logits: NDArray[Any], ignore_index: int
) -> NDArray[Any] | None:
    if labels is None or (type(labels) is np.ndarray and labels.dtype == _INT64_DTYPE):
        return labels
    return _as_labels(labels, logits.shape[-1] if logits.ndim else 0, ignore_index)


def _distill(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None,
    settings: _core.Settings,
    with_grad: bool,
    out: object = None,
) -> tuple[Loss, NDArray[Any] | None]:
    """The loss (and with ``with_grad`` the gradient, in the student's shape)."""
    s, t = _pair(student_logits, teacher_logits)
    y = _labels_for(labels, s, settings.ignore_index)
    if out is not None:
        out = as_out(out)
    return _core.distillation(settings, s, t, y, with_grad, out)


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
    s, t = _pair(student_logits, teacher_logits)
    return _core.kl_divergence(s, t, temperature, reduction)


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
    x = _as_logits(logits, "logits")
    y = _as_labels(labels, x.shape[-1] if x.ndim else 0, ignore_index)
    return _core.cross_entropy(x.astype(_compute_dtype(x), copy=False), y, reduction, ignore_index)


def _softmax(x: ArrayLike, temperature: float, log: bool) -> NDArray[np.floating[Any]]:
    temperature = _real(temperature, "temperature")
    a = _as_logits(x, "x")
    return _core.softmax(a.astype(_compute_dtype(a), copy=False), temperature, log)


def softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``softmax(x / temperature)`` along the last axis, in float32 or float64 as computed."""
    return _softmax(x, temperature, log=False)


def log_softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``log(softmax(x / temperature))`` along the last axis, computed as
    ``(x - max)/T - log(sum(exp((x - max)/T)))``, never as a log of a rounded probability."""
    return _softmax(x, temperature, log=True)
