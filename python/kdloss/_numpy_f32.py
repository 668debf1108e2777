"""The distillation loss written the way a NumPy user would write it, all in float32.

A peer of ``python -m kdloss bench``: whole-array operations, ``log_softmax`` through
max / exp / sum, the KL and cross-entropy terms and the closed-form gradient, every temporary a
float32 array of the full ``(B, C)`` shape. It does not handle masked (-inf) classes and does
no input checking; it exists to be timed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["distillation_loss", "distillation_loss_and_grad"]

F32 = NDArray[np.float32]


def _log_softmax(x: F32) -> F32:
    z = x - x.max(axis=1, keepdims=True)
    out: F32 = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def distillation_loss(
    student: F32, teacher: F32, labels: NDArray[np.integer], temperature: float, alpha: float
) -> float:
    """Mean distillation loss of ``(B, C)`` float32 logits, computed in float32."""
    n = student.shape[0]
    log_ps = _log_softmax(student / np.float32(temperature))
    log_pt = _log_softmax(teacher / np.float32(temperature))
    kl = np.sum(np.exp(log_pt) * (log_pt - log_ps)) / np.float32(n)
    ce = -_log_softmax(student)[np.arange(n), labels].mean()
    return float(np.float32(alpha * temperature * temperature) * kl + np.float32(1 - alpha) * ce)


def distillation_loss_and_grad(
    student: F32, teacher: F32, labels: NDArray[np.integer], temperature: float, alpha: float
) -> tuple[float, F32]:
    """Mean distillation loss and its gradient with respect to ``student``, in float32."""
    n = student.shape[0]
    rows = np.arange(n)
    log_ps = _log_softmax(student / np.float32(temperature))
    log_pt = _log_softmax(teacher / np.float32(temperature))
    pt = np.exp(log_pt)
    kl = np.sum(pt * (log_pt - log_ps)) / np.float32(n)
    log_p1 = _log_softmax(student)
    ce = -log_p1[rows, labels].mean()
    loss = np.float32(alpha * temperature * temperature) * kl + np.float32(1 - alpha) * ce

    grad: F32 = np.float32(alpha * temperature / n) * (np.exp(log_ps) - pt)
    p1 = np.exp(log_p1)
    p1[rows, labels] -= np.float32(1)
    grad += np.float32((1 - alpha) / n) * p1
    return float(loss), grad
