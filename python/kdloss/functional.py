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
from .components import Components

__all__ = [
    "DIVERGENCES",
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_and_grad",
    "divergence",
    "kl_divergence",
    "log_softmax",
    "softmax",
]

#: The divergences ``divergence=`` (and :func:`divergence`'s ``kind``) names.
DIVERGENCES = ("forward_kl", "reverse_kl")

Loss = Union[float, NDArray[np.floating[Any]]]
#: ``normalizer=``: one divisor of both terms' sums, or ``(n_div, n_ce)``.
Normalizer = Union[float, tuple[float, float], None]
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


def _flag(value: object, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _name(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    return value


def _mask(mask: ArrayLike | None) -> NDArray[np.bool_] | None:
    """``mask`` as a boolean array (no copy if possible); its shape is checked natively."""
    if mask is None or (type(mask) is np.ndarray and mask.dtype == np.bool_):
        return mask
    _refuse_masked(mask, "mask", "mask.filled(False)")
    m = as_array(mask, "mask")
    if m.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}")
    return m


def _class_weight(value: ArrayLike | None) -> NDArray[np.float64] | None:
    """A read-only float64 copy of ``class_weight``; its values and length are checked
    natively."""
    if value is None:
        return None
    _refuse_masked(value, "class_weight", "class_weight.filled(0.0)")
    w = as_array(value, "class_weight")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"class_weight must hold real numbers, got an array of dtype {w.dtype}")
    if w.ndim != 1:
        raise ValueError(f"class_weight must be 1-D (one weight per class), got shape {w.shape}")
    copy = np.array(w, dtype=np.float64)
    copy.flags.writeable = False
    return copy


def _divisor(value: object) -> float | None:
    """A ``normalizer`` that must be one real number (or None); its value is checked natively."""
    if isinstance(value, (tuple, list)):
        raise TypeError(
            f"normalizer must be a real number here, got {type(value).__name__} {value!r}"
        )
    return None if value is None else _real(value, "normalizer")


def _normalizer(value: object) -> float | tuple[float, float] | None:
    """A ``normalizer`` of a distillation loss: a real number or two (``(n_div, n_ce)``)."""
    if not isinstance(value, (tuple, list)):
        return _divisor(value)
    if len(value) != 2:
        raise ValueError(
            f"normalizer must be a number or a pair (n_div, n_ce), got {len(value)} values"
        )
    return _real(value[0], "normalizer[0]"), _real(value[1], "normalizer[1]")


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
    temperature: object,
    alpha: object,
    reduction: object,
    ignore_index: object,
    divergence: object = "forward_kl",
    beta: object = 0.5,
    skew: object = 0.1,
    t2_scale: object = True,
    class_weight: ArrayLike | None = None,
    label_smoothing: object = 0.0,
) -> _core.Settings:
    """Loss settings: their types checked here, their values by ``_core.Settings``."""
    return _core.Settings(
        _real(temperature, "temperature"),
        _real(alpha, "alpha"),
        _reduction(reduction),
        _ignore_index(ignore_index),
        _name(divergence, "divergence"),
        _real(beta, "beta"),
        _real(skew, "skew"),
        _flag(t2_scale, "t2_scale"),
        _class_weight(class_weight),
        _real(label_smoothing, "label_smoothing"),
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
    mask: ArrayLike | None = None,
    normalizer: object = None,
    return_components: object = False,
) -> tuple[Loss | Components, NDArray[Any] | None]:
    """The loss, or its :class:`Components` (and with ``with_grad`` the gradient, in the
    student's shape)."""
    s, t = _pair(student_logits, teacher_logits)
    y = _labels_for(labels, s, settings.ignore_index)
    if out is not None:
        out = as_out(out)
    if mask is None and normalizer is None and return_components is False:
        return _core.distillation(settings, s, t, y, with_grad, out)
    parts = _flag(return_components, "return_components")
    loss, grad = _core.distillation(
        settings, s, t, y, with_grad, out, _mask(mask), _normalizer(normalizer), parts
    )
    return (Components(*loss) if parts else loss), grad


@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: Reduced = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
) -> float: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: PerRow,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
) -> NDArray[np.floating[Any]]: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
) -> Loss: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[True],
) -> Components: ...
@overload
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: bool = ...,
) -> Loss | Components: ...
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    t2_scale: bool = True,
    class_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    mask: ArrayLike | None = None,
    normalizer: Normalizer = None,
    return_components: bool = False,
) -> Loss | Components:
    """The distillation loss.

    Per row, ``alpha * [T**2] * div(softmax(t/T), softmax(s/T)) + (1 - alpha) * CE(s, label)``,
    with CE at T = 1. A row counts in both terms if its label is not ``ignore_index`` and its
    ``mask`` entry is true.

    Args:
        student_logits: logits of shape ``(..., C)``.
        teacher_logits: logits of the same shape.
        labels: integer class indices of shape ``student_logits.shape[:-1]``; may be ``None``
            only when ``alpha == 1``.
        temperature: softening temperature ``T > 0`` of the divergence term.
        alpha: weight of the divergence term, in ``[0, 1]``; a term whose weight is 0 is not
            computed.
        divergence: ``"forward_kl"`` (``KL(p || q)``, Hinton's; ``p`` the teacher's
            distribution, ``q`` the student's) or ``"reverse_kl"`` (``KL(q || p)``).
        beta: the JSD's mixture weight, in ``[0, 1]`` (checked whatever ``divergence`` is).
        skew: the skewed KLs' mixture weight, in ``[0, 1]`` (checked likewise).
        t2_scale: whether the divergence term is multiplied by ``T**2`` (Hinton's loss; TRL,
            Liger Kernel and DistiLLM leave it out).
        class_weight: one weight per class (finite, >= 0; copied): a row's CE weighs its
            label's, and ``"mean"`` divides the CE sum by the counted rows' weights, as
            PyTorch's ``F.cross_entropy(weight=...)`` does.
        label_smoothing: ``eps`` in ``[0, 1]``: the CE is ``(1 - eps) * w[y] * CE
            + (eps / C) * sum_c w[c] * (-log q[c])``, PyTorch's ``label_smoothing``.
        reduction: ``"mean"`` (the divergence sum over the counted rows' number, the CE sum
            over their label weights; 0.0 when that is 0), ``"sum"`` or ``"none"`` (an array of
            shape ``student_logits.shape[:-1]``, rows that do not count 0).
        ignore_index: label value marking rows to leave out.
        mask: a boolean array of the labels' shape; rows where it is false do not count.
        normalizer: divides the summed terms instead of the reduction's divisors (with
            ``"mean"`` or ``"sum"``): ``N`` for both, or ``(n_div, n_ce)``, finite and > 0.
            Given the full batch's ``(count, weight_sum)``, micro-batch losses add up to the
            full batch's ``"mean"`` loss (gradient accumulation).
        return_components: return a :class:`~kdloss.Components` in place of the loss.

    Returns:
        A Python float for ``"mean"`` and ``"sum"``, else an array in the computation dtype;
        with ``return_components``, a :class:`~kdloss.Components` of such values.
    """
    settings = _settings(
        temperature,
        alpha,
        reduction,
        ignore_index,
        divergence,
        beta,
        skew,
        t2_scale,
        class_weight,
        label_smoothing,
    )
    loss, _ = _distill(
        student_logits,
        teacher_logits,
        labels,
        settings,
        False,
        None,
        mask,
        normalizer,
        return_components,
    )
    return loss


@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: Reduced = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
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
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: PerRow,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
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
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[False] = ...,
    out: NDArray[Any] | None = ...,
) -> tuple[Loss, NDArray[Any]]: ...
@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: Literal[True],
    out: NDArray[Any] | None = ...,
) -> tuple[Components, NDArray[Any]]: ...
@overload
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = ...,
    *,
    temperature: float = ...,
    alpha: float = ...,
    divergence: str = ...,
    beta: float = ...,
    skew: float = ...,
    t2_scale: bool = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    reduction: str = ...,
    ignore_index: int = ...,
    mask: ArrayLike | None = ...,
    normalizer: Normalizer = ...,
    return_components: bool = ...,
    out: NDArray[Any] | None = ...,
) -> tuple[Loss | Components, NDArray[Any]]: ...
def distillation_loss_and_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    t2_scale: bool = True,
    class_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    mask: ArrayLike | None = None,
    normalizer: Normalizer = None,
    return_components: bool = False,
    out: NDArray[Any] | None = None,
) -> tuple[Loss | Components, NDArray[Any]]:
    """The distillation loss and its gradient with respect to ``student_logits``.

    Takes the arguments of :func:`distillation_loss`, plus ``out``: an optional C-contiguous,
    writeable array of the student's shape and the computation dtype that receives the
    gradient (so a training loop allocates nothing). The gradient is ``d(loss)/d(student)``
    for every option: for forward KL, ``alpha*[T**2]/T*(softmax(s/T) - softmax(t/T))
    + (1 - alpha)*(softmax(s) - onehot(label))`` per row, each term divided as the loss
    divides it; rows that do not count get zeros.

    Returns:
        ``(loss, grad)``, with ``grad`` of ``student_logits``' shape (``out`` itself if given);
        with ``return_components``, ``(components, grad)``.
    """
    settings = _settings(
        temperature,
        alpha,
        reduction,
        ignore_index,
        divergence,
        beta,
        skew,
        t2_scale,
        class_weight,
        label_smoothing,
    )
    loss, grad = _distill(
        student_logits,
        teacher_logits,
        labels,
        settings,
        True,
        out,
        mask,
        normalizer,
        return_components,
    )
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
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> float: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: PerRow,
    ignore_index: int = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> NDArray[np.floating[Any]]: ...
@overload
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = ...,
    ignore_index: int = ...,
    class_weight: ArrayLike | None = ...,
    label_smoothing: float = ...,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> Loss: ...
def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
    class_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    mask: ArrayLike | None = None,
    normalizer: float | None = None,
) -> Loss:
    """Cross-entropy ``logsumexp(x) - x[label]`` per row, exact (never clamped), reduced.

    Rows whose label equals ``ignore_index``, or whose ``mask`` entry is false, do not count
    (and are 0 with ``"none"``). With ``class_weight`` (one finite weight >= 0 per class) a
    row's value weighs its label's weight and ``"mean"`` divides by their sum over the
    counted rows (PyTorch's weighted mean); ``normalizer=N`` divides the sum by ``N`` instead.
    ``label_smoothing=eps`` (in ``[0, 1]``) makes each row ``(1 - eps) * w[y] * CE + (eps / C)
    * sum_c w[c] * (-log q[c])``, as PyTorch's; a class of weight 0 contributes 0 even where
    its log-probability is ``-inf``.
    """
    reduction = _reduction(reduction)
    ignore_index = _ignore_index(ignore_index)
    x = _as_logits(logits, "logits")
    y = _as_labels(labels, x.shape[-1] if x.ndim else 0, ignore_index)
    return _core.cross_entropy(
        x.astype(_compute_dtype(x), copy=False),
        y,
        reduction,
        ignore_index,
        _mask(mask),
        _divisor(normalizer),
        _class_weight(class_weight),
        _real(label_smoothing, "label_smoothing"),
    )


@overload
def divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    kind: str = ...,
    temperature: float = ...,
    beta: float = ...,
    skew: float = ...,
    reduction: Reduced = ...,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> float: ...
@overload
def divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    kind: str = ...,
    temperature: float = ...,
    beta: float = ...,
    skew: float = ...,
    reduction: PerRow,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> NDArray[np.floating[Any]]: ...
@overload
def divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    kind: str = ...,
    temperature: float = ...,
    beta: float = ...,
    skew: float = ...,
    reduction: str = ...,
    mask: ArrayLike | None = ...,
    normalizer: float | None = ...,
) -> Loss: ...
def divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    reduction: str = "mean",
    mask: ArrayLike | None = None,
    normalizer: float | None = None,
) -> Loss:
    """The divergence ``kind`` of ``softmax(student/T)`` from ``softmax(teacher/T)`` per row
    (no ``T**2``, no cross-entropy), reduced over the rows ``mask`` keeps.

    ``kind`` is one of :data:`DIVERGENCES` (see :func:`distillation_loss`); ``"mean"`` divides
    by the counted rows (0.0 when none count), ``normalizer=N`` by ``N``.
    """
    s, t = _pair(student_logits, teacher_logits)
    return _core.divergence(
        s,
        t,
        _name(kind, "kind"),
        _real(temperature, "temperature"),
        _real(beta, "beta"),
        _real(skew, "skew"),
        _reduction(reduction),
        _mask(mask),
        _divisor(normalizer),
    )


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
