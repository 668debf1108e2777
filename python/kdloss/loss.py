"""The :class:`DistillationLoss` module-style object."""

from __future__ import annotations

from typing import Any, Literal, Optional, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .components import Components
from .functional import Loss, Normalizer, _class_weight, _distill, _settings

__all__ = ["DistillationLoss"]

# The settings in the order of the constructor (after temperature and alpha): its keywords,
# its repr, its equality and its pickle.
_Key = tuple[float, float, str, float, float, bool, Optional[tuple[float, ...]], float, str, int]


class DistillationLoss:
    """A distillation loss with fixed settings, callable like a loss module.

    ``loss = alpha * [T**2] * div(softmax(teacher/T), softmax(student/T))
    + (1 - alpha) * CE(student, labels)``, CE at T = 1; ``div`` is forward KL
    (``KL(p_teacher || p_student)``, Hinton's) by default. With ``reduction="mean"`` the
    divergence is averaged over the rows that count (those whose label is not ``ignore_index``
    and whose ``mask`` entry, if given, is true) and the CE over their label weights; with
    ``"sum"`` both are summed over them, and ``"none"`` gives each row's loss.

    Args:
        temperature: softening temperature ``T``, finite and ``> 0``.
        alpha: weight of the divergence term, in ``[0, 1]``.
        divergence: ``"forward_kl"`` or ``"reverse_kl"`` (``KL(p_student || p_teacher)``).
        beta: the JSD's mixture weight, in ``[0, 1]``.
        skew: the skewed KLs' mixture weight, in ``[0, 1]``.
        t2_scale: whether the divergence term is multiplied by ``T**2``.
        class_weight: one weight per class for the cross-entropy (finite, ``>= 0``; copied).
        label_smoothing: the cross-entropy's label smoothing, in ``[0, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: label value of rows that count in neither term.

    Example:
        >>> import numpy as np, kdloss
        >>> kd = kdloss.DistillationLoss(temperature=2.0, alpha=0.5)
        >>> s, t = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
        >>> round(kd(s, t, np.array([0, 1])), 6)
        0.549306
    """

    __slots__ = ("_class_weight", "_settings")

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 0.5,
        *,
        divergence: str = "forward_kl",
        beta: float = 0.5,
        skew: float = 0.1,
        t2_scale: bool = True,
        class_weight: ArrayLike | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        self._class_weight = _class_weight(class_weight)
        self._settings = _settings(
            temperature,
            alpha,
            reduction,
            ignore_index,
            divergence,
            beta,
            skew,
            t2_scale,
            self._class_weight,
            label_smoothing,
        )

    @property
    def temperature(self) -> float:
        """The softening temperature ``T``."""
        return self._settings.temperature

    @property
    def alpha(self) -> float:
        """The weight of the divergence term; ``1 - alpha`` weights the cross-entropy."""
        return self._settings.alpha

    @property
    def divergence(self) -> str:
        """The divergence of the distillation term."""
        return self._settings.divergence

    @property
    def beta(self) -> float:
        """The JSD's mixture weight."""
        return self._settings.beta

    @property
    def skew(self) -> float:
        """The skewed KLs' mixture weight."""
        return self._settings.skew

    @property
    def t2_scale(self) -> bool:
        """Whether the divergence term is multiplied by ``T**2``."""
        return self._settings.t2_scale

    @property
    def class_weight(self) -> NDArray[np.float64] | None:
        """The cross-entropy's class weights (a read-only copy of the ones given), or None."""
        return self._class_weight

    @property
    def label_smoothing(self) -> float:
        """The cross-entropy's label smoothing."""
        return self._settings.label_smoothing

    @property
    def reduction(self) -> str:
        """How rows are combined: ``"mean"``, ``"sum"`` or ``"none"``."""
        return self._settings.reduction

    @property
    def ignore_index(self) -> int:
        """The label value of rows left out of the loss."""
        return self._settings.ignore_index

    @overload
    def __call__(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[False] = ...,
    ) -> Loss: ...
    @overload
    def __call__(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[True],
    ) -> Components: ...
    def __call__(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
        *,
        mask: ArrayLike | None = None,
        normalizer: Normalizer = None,
        return_components: bool = False,
    ) -> Loss | Components:
        """The loss (see :meth:`forward`)."""
        return _distill(
            student_logits,
            teacher_logits,
            labels,
            self._settings,
            False,
            None,
            mask,
            normalizer,
            return_components,
        )[0]

    @overload
    def forward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[False] = ...,
    ) -> Loss: ...
    @overload
    def forward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[True],
    ) -> Components: ...
    def forward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
        *,
        mask: ArrayLike | None = None,
        normalizer: Normalizer = None,
        return_components: bool = False,
    ) -> Loss | Components:
        """The loss: a Python float for ``"mean"``/``"sum"``, an array for ``"none"``.

        ``mask``, ``normalizer`` and ``return_components`` are those of
        :func:`kdloss.distillation_loss`. Writes nothing of the inputs' size: one fused pass
        set over the rows.
        """
        return _distill(
            student_logits,
            teacher_logits,
            labels,
            self._settings,
            False,
            None,
            mask,
            normalizer,
            return_components,
        )[0]

    @overload
    def forward_backward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[False] = ...,
        out: NDArray[Any] | None = ...,
    ) -> tuple[Loss, NDArray[Any]]: ...
    @overload
    def forward_backward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = ...,
        *,
        mask: ArrayLike | None = ...,
        normalizer: Normalizer = ...,
        return_components: Literal[True],
        out: NDArray[Any] | None = ...,
    ) -> tuple[Components, NDArray[Any]]: ...
    def forward_backward(
        self,
        student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike | None = None,
        *,
        mask: ArrayLike | None = None,
        normalizer: Normalizer = None,
        return_components: bool = False,
        out: NDArray[Any] | None = None,
    ) -> tuple[Loss | Components, NDArray[Any]]:
        """The loss and its gradient with respect to ``student_logits``.

        ``out``, if given, must be a C-contiguous, writeable array of the student's shape and
        the computation dtype; the gradient is written into it and it is returned.
        """
        loss, grad = _distill(
            student_logits,
            teacher_logits,
            labels,
            self._settings,
            True,
            out,
            mask,
            normalizer,
            return_components,
        )
        assert grad is not None
        return loss, grad

    def _key(self) -> _Key:
        c = self._settings
        return (
            c.temperature,
            c.alpha,
            c.divergence,
            c.beta,
            c.skew,
            c.t2_scale,
            None if self._class_weight is None else tuple(self._class_weight.tolist()),
            c.label_smoothing,
            c.reduction,
            c.ignore_index,
        )

    def __repr__(self) -> str:
        t, a, d, b, s, t2, w, eps, r, i = self._key()
        # Weights as a list (evaluable) when there are few, else summarised.
        if w is None:
            weights = "None"
        elif len(w) <= 16:
            weights = repr(list(w))
        else:
            weights = f"<{len(w)} class weights>"
        return (
            f"DistillationLoss(temperature={t!r}, alpha={a!r}, divergence={d!r}, beta={b!r}, "
            f"skew={s!r}, t2_scale={t2!r}, class_weight={weights}, label_smoothing={eps!r}, "
            f"reduction={r!r}, ignore_index={i!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistillationLoss):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, self._key())


def _restore(
    temperature: float, alpha: float, reduction: str, ignore_index: int
) -> DistillationLoss:
    """Rebuilds a loss pickled before it had a divergence (the settings it had then)."""
    return DistillationLoss(temperature, alpha, reduction=reduction, ignore_index=ignore_index)


def _rebuild(
    temperature: float,
    alpha: float,
    divergence: str,
    beta: float,
    skew: float,
    t2_scale: bool,
    class_weight: tuple[float, ...] | None,
    label_smoothing: float,
    reduction: str,
    ignore_index: int,
) -> DistillationLoss:
    return DistillationLoss(
        temperature,
        alpha,
        divergence=divergence,
        beta=beta,
        skew=skew,
        t2_scale=t2_scale,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
        ignore_index=ignore_index,
    )
