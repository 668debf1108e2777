"""The :class:`DistillationLoss` module-style object."""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike, NDArray

from .functional import Loss, _distill, _settings

__all__ = ["DistillationLoss"]


class DistillationLoss:
    """Hinton's distillation loss with fixed settings, callable like a loss module.

    ``loss = alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))
    + (1 - alpha) * CE(student, labels)``, CE at T = 1. With ``reduction="mean"`` both terms
    are averaged over the rows that count (those whose label is not ``ignore_index``); with
    ``"sum"`` they are summed over them, and ``"none"`` gives each row's loss.

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

    __slots__ = ("_settings",)

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 0.5,
        *,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        self._settings = _settings(temperature, alpha, reduction, ignore_index)

    @property
    def temperature(self) -> float:
        """The softening temperature ``T``."""
        return self._settings.temperature

    @property
    def alpha(self) -> float:
        """The weight of the KL term; ``1 - alpha`` weights the cross-entropy."""
        return self._settings.alpha

    @property
    def reduction(self) -> str:
        """How rows are combined: ``"mean"``, ``"sum"`` or ``"none"``."""
        return self._settings.reduction

    @property
    def ignore_index(self) -> int:
        """The label value of rows left out of the loss."""
        return self._settings.ignore_index

    def __call__(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
    ) -> Loss:
        """The loss (see :meth:`forward`)."""
        return _distill(student_logits, teacher_logits, labels, self._settings, False)[0]

    def forward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
    ) -> Loss:
        """The loss: a Python float for ``"mean"``/``"sum"``, an array for ``"none"``.

        Writes nothing of the inputs' size: one fused pass set over the rows.
        """
        return _distill(student_logits, teacher_logits, labels, self._settings, False)[0]

    def forward_backward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
        *,
        out: NDArray[Any] | None = None,
    ) -> tuple[Loss, NDArray[Any]]:
        """The loss and its gradient with respect to ``student_logits``.

        ``out``, if given, must be a C-contiguous, writeable array of the student's shape and
        the computation dtype; the gradient is written into it and it is returned.
        """
        loss, grad = _distill(student_logits, teacher_logits, labels, self._settings, True, out)
        assert grad is not None
        return loss, grad

    def _key(self) -> tuple[float, float, str, int]:
        c = self._settings
        return (c.temperature, c.alpha, c.reduction, c.ignore_index)

    def __repr__(self) -> str:
        t, a, r, i = self._key()
        return (
            f"DistillationLoss(temperature={t!r}, alpha={a!r}, reduction={r!r}, ignore_index={i!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistillationLoss):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, self._key())


def _restore(
    temperature: float, alpha: float, reduction: str, ignore_index: int
) -> DistillationLoss:
    return DistillationLoss(temperature, alpha, reduction=reduction, ignore_index=ignore_index)
