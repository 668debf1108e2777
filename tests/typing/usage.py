"""Type-checked, never run: the result types a user's mypy sees (``mypy --strict`` on this file,
in ``.ci/run``). A reduction to one number gives a ``float``; ``"none"`` gives an array."""

from __future__ import annotations

from typing import Any, assert_type

import kdloss
import numpy as np
from numpy.typing import NDArray

s = np.zeros((4, 10), np.float32)
t = np.zeros((4, 10), np.float32)
y = np.zeros(4, np.int64)
reduction: str = "sum"

assert_type(kdloss.distillation_loss(s, t, y), float)
assert_type(kdloss.distillation_loss(s, t, y, reduction="sum"), float)
assert_type(kdloss.distillation_loss(s, t, y, reduction="none"), NDArray[np.floating[Any]])
assert_type(kdloss.distillation_loss(s, t, y, reduction=reduction), kdloss.functional.Loss)

loss, grad = kdloss.distillation_loss_and_grad(s, t, y, temperature=2.0)
assert_type(loss, float)
assert_type(grad, NDArray[Any])
rows, _ = kdloss.distillation_loss_and_grad(s, t, y, reduction="none")
assert_type(rows, NDArray[np.floating[Any]])

assert_type(kdloss.kl_divergence(s, t, temperature=2.0), float)
assert_type(kdloss.kl_divergence(s, t, reduction="none"), NDArray[np.floating[Any]])
assert_type(kdloss.cross_entropy(s, y), float)
assert_type(kdloss.cross_entropy(s, y, reduction="none"), NDArray[np.floating[Any]])

total: float = 0.0
total += kdloss.distillation_loss(s, t, y, alpha=0.9)

parts = kdloss.distillation_loss(s, t, y, return_components=True)
assert_type(parts, kdloss.Components)
assert_type(parts.count, "int | NDArray[np.bool_]")
parts_and_grad, _ = kdloss.distillation_loss_and_grad(s, t, y, return_components=True)
assert_type(parts_and_grad, kdloss.Components)
kd = kdloss.DistillationLoss(2.0, 0.5, divergence="reverse_kl", t2_scale=False)
assert_type(kd(s, t, y, mask=y > 0, normalizer=(4, 4.0)), kdloss.functional.Loss)
assert_type(kd.forward(s, t, y, return_components=True), kdloss.Components)
assert_type(kd.forward_backward(s, t, y, return_components=True)[0], kdloss.Components)
assert_type(kdloss.divergence(s, t, kind="reverse_kl"), float)
assert_type(kdloss.divergence(s, t, reduction="none"), NDArray[np.floating[Any]])
