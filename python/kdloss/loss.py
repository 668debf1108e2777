"""The :class:`DistillationLoss` module-style object."""

from __future__ import annotations

from typing import Any, Optional

from numpy.typing import ArrayLike, NDArray

from . import _core
from .functional import (
    Loss,
    _ignore_index,
    _real,
    _reduction,
    distillation_loss,
    distillation_loss_and_grad,
)

__all__ = ["DistillationLoss"]


class DistillationLoss:
    """Hinton's distillation loss with fixed settings, callable like a loss module.

    ``loss = alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))
    + (1 - alpha) * CE(student, labels)``, KL averaged over rows and CE at T = 1.

    Args:
        temperature: softening temperature ``T``, finite and ``> 0``.
        alpha: weight of the distillation (KL) term, in ``[0, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: label value of rows that count in neither term.

    Example:
        >>> import numpy as np, kdloss
        >>> kd = kdloss.DistillationLoss(temperature=2.0, alpha=0.5)
        >>> s, t = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
        >>> round(kd(s, t, np.array([0, 1])), 6)
        0.549306
    """

    __slots__ = ("_alpha", "_ignore_index", "_reduction", "_temperature")

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 0.5,
        *,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        temperature = _real(temperature, "temperature")
        alpha = _real(alpha, "alpha")
        reduction = _reduction(reduction)
        ignore_index = _ignore_index(ignore_index)
        _core.validate(temperature, alpha, reduction)
        self._temperature = temperature
        self._alpha = alpha
        self._reduction = reduction
        self._ignore_index = ignore_index

    @property
    def temperature(self) -> float:
        """The softening temperature ``T``."""
        return self._temperature

    @property
    def alpha(self) -> float:
        """The weight of the KL term; ``1 - alpha`` weights the cross-entropy."""
        return self._alpha

    @property
    def reduction(self) -> str:
        """How rows are combined: ``"mean"``, ``"sum"`` or ``"none"``."""
        return self._reduction

    @property
    def ignore_index(self) -> int:
        """The label value of rows left out of the loss."""
        return self._ignore_index

    def _settings(self) -> dict[str, Any]:
        return {
            "temperature": self._temperature,
            "alpha": self._alpha,
            "reduction": self._reduction,
            "ignore_index": self._ignore_index,
        }

    def __call__(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: Optional[ArrayLike] = None,
    ) -> Loss:
        """The loss (see :meth:`forward`)."""
        return distillation_loss(student_logits, teacher_logits, labels, **self._settings())

    def forward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: Optional[ArrayLike] = None,
    ) -> Loss:
        """The loss: a Python float for ``"mean"``/``"sum"``, an array for ``"none"``.

        Writes nothing of the inputs' size: one fused pass set over the rows.
        """
        return distillation_loss(student_logits, teacher_logits, labels, **self._settings())

    def forward_backward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: Optional[ArrayLike] = None,
        *,
        out: Optional[NDArray[Any]] = None,
    ) -> tuple[Loss, NDArray[Any]]:
        """The loss and its gradient with respect to ``student_logits``.

        ``out``, if given, must be a C-contiguous, writeable array of the student's shape and
        the computation dtype; the gradient is written into it and it is returned.
        """
        return distillation_loss_and_grad(
            student_logits, teacher_logits, labels, out=out, **self._settings()
        )

    def __repr__(self) -> str:
        return (
            f"DistillationLoss(temperature={self._temperature!r}, alpha={self._alpha!r}, "
            f"reduction={self._reduction!r}, ignore_index={self._ignore_index!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistillationLoss):
            return NotImplemented
        return self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash(tuple(self._settings().values()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, tuple(self._settings().values()))


def _restore(
    temperature: float, alpha: float, reduction: str, ignore_index: int
) -> DistillationLoss:
    return DistillationLoss(temperature, alpha, reduction=reduction, ignore_index=ignore_index)

