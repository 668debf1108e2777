"""The functional API: distillation loss, its gradient, KL divergence, cross-entropy, softmax.

Every function takes anything :func:`numpy.asarray` accepts, works along the last axis (each
leading index is one row) and computes in float64 if either input is float64, else float32
(float16 is computed as float32, integer and boolean inputs as float64). C-contiguous float32
and float64 arrays are read in place; other layouts are read row by row without a full copy
where NumPy can reshape them as a view.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Union

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

_INT64 = np.iinfo(np.int64)


def _as_logits(x: ArrayLike, name: str) -> NDArray[Any]:
    """``x`` as an array of real numbers with a non-empty last axis (no copy if possible)."""
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _reduction(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"reduction must be a str, got {type(value).__name__} {value!r}")
    return value


def _ignore_index(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not _INT64.min <= v <= _INT64.max:
        raise ValueError(f"ignore_index must fit in 64 bits, got {v}")
    return v


def _as_labels(labels: ArrayLike, logits: NDArray[Any]) -> NDArray[np.int64]:
    """``labels`` as a flat int64 array, one per row of ``logits``."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" and not (y.size == 0 and y.dtype.kind == "f"):
        raise TypeError(f"labels must hold integers, got an array of dtype {y.dtype}")
    expected = logits.shape[:-1]
    if y.shape != expected:
        raise ValueError(
            f"labels must have shape {expected} (logits.shape[:-1]), got shape {y.shape}"
        )
    if y.dtype.kind == "u" and y.size and y.max() > _INT64.max:
        raise ValueError(
            f"labels must be in [0, {logits.shape[-1]}) or equal ignore_index, got {y.max()}"
        )
    return y.astype(np.int64, copy=False).reshape(-1)


def _shaped(loss: Any, shape: tuple[int, ...]) -> Loss:
    """A scalar loss as a Python float; per-row losses in the rows' original shape."""
    if isinstance(loss, float):
        return loss
    return np.asarray(loss).reshape(shape)


def _check_pair(
    student_logits: ArrayLike, teacher_logits: ArrayLike
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    s = _as_logits(student_logits, "student_logits")
    t = _as_logits(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, "
            f"got {s.shape} and {t.shape}"
        )
    dtype = _compute_dtype(s, t)
    return s, t, _rows(s, dtype), _rows(t, dtype)


def _distill(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: Optional[ArrayLike],
    temperature: float,
    alpha: float,
    reduction: str,
    ignore_index: int,
    with_grad: bool,
    out: Optional[NDArray[Any]] = None,
) -> tuple[Loss, Optional[NDArray[Any]], tuple[int, ...]]:
    temperature = _real(temperature, "temperature")
    alpha = _real(alpha, "alpha")
    reduction = _reduction(reduction)
    ignore_index = _ignore_index(ignore_index)
    _core.validate(temperature, alpha, reduction)
    s, _, s2, t2 = _check_pair(student_logits, teacher_logits)
    y = None if labels is None else _as_labels(labels, s)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        if out.shape != s.shape:
            raise ValueError(f"out must have shape {s.shape}, got {out.shape}")
        if out.dtype != s2.dtype:
            raise ValueError(f"out must have dtype {s2.dtype}, got {out.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        out = out.reshape(s2.shape)
    loss, grad = _core.distillation(
        s2, t2, y, temperature, alpha, reduction, ignore_index, with_grad, out
    )
    return _shaped(loss, s.shape[:-1]), grad, s.shape


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: Optional[ArrayLike] = None,
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
    loss, _, _ = _distill(
        student_logits,
        teacher_logits,
        labels,
        temperature,
        alpha,
        reduction,
        ignore_index,
        with_grad=False,
    )
    return loss


def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: Optional[ArrayLike] = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
    out: Optional[NDArray[Any]] = None,
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
    loss, grad, shape = _distill(
        student_logits,
        teacher_logits,
        labels,
        temperature,
        alpha,
        reduction,
        ignore_index,
        with_grad=True,
        out=out,
    )
    assert grad is not None
    if out is not None:
        return loss, out
    return loss, grad.reshape(shape)


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
    s, _, s2, t2 = _check_pair(student_logits, teacher_logits)
    return _shaped(_core.kl_divergence(s2, t2, temperature, reduction), s.shape[:-1])


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
    y = _as_labels(labels, x)
    result = _core.cross_entropy(_rows(x, _compute_dtype(x)), y, reduction, ignore_index)
    return _shaped(result, x.shape[:-1])


def _softmax(x: ArrayLike, temperature: float, log: bool) -> NDArray[np.floating[Any]]:
    temperature = _real(temperature, "temperature")
    _core.validate(temperature, 0.0, "mean")
    a = _as_logits(x, "x")
    out: NDArray[np.floating[Any]] = _core.softmax(
        _rows(a, _compute_dtype(a)), temperature, log
    )
    return out.reshape(a.shape)


def softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``softmax(x / temperature)`` along the last axis, in float32 or float64 as computed."""
    return _softmax(x, temperature, log=False)


def log_softmax(x: ArrayLike, *, temperature: float = 1.0) -> NDArray[np.floating[Any]]:
    """``log(softmax(x / temperature))`` along the last axis, computed as
    ``(x - max)/T - log(sum(exp((x - max)/T)))``, never as a log of a rounded probability."""
    return _softmax(x, temperature, log=True)
