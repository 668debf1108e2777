"""Rows long enough to be taken in several pieces: the maxima move from piece to piece.

The statistics of a long row are gathered piece by piece, each piece against the largest
logit seen so far, and rescaled when a later piece holds a larger one. These rows put the
maximum where that matters: at the end, far above everything before it, after stretches of
masked (-inf) classes, and next to NaN or +inf.
"""

from __future__ import annotations

from typing import Any

import kdloss
import numpy as np
import pytest
from helpers import IGNORE, assert_matches_reference
from kdloss import reference

INF = np.inf
FLOATS = [np.float64, np.float32]
# Rows are tiled once their logits and kept exps pass 1 MiB: over 65536 classes of float32.
LONG = 65536
SIZES = [LONG + 1, LONG + 2048, LONG + 6161, 2 * LONG + 17]


def _check(
    s: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    dtype: Any,
    temperature: float,
    alpha: float,
    reduction: str = "none",
) -> None:
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    assert_matches_reference(loss, grad, s, t, y, dtype=dtype, **kwargs)
    # The loss alone is gathered the same way, without keeping anything for the gradient.
    np.testing.assert_array_equal(kdloss.distillation_loss(s, t, y, **kwargs), loss)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("classes", SIZES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7, 3.5])
def test_maximum_rising_along_the_row(
    rng: np.random.Generator, dtype: Any, classes: int, temperature: float
) -> None:
    """The student's maximum is in its last class, the teacher's in its first."""
    ramp = np.linspace(-30.0, 30.0, classes)
    s = np.stack([ramp, ramp * 0.3, -ramp]) + rng.standard_normal((3, classes))
    t = np.stack([-ramp, ramp, ramp * 0.5]) + rng.standard_normal((3, classes))
    y = np.array([classes - 1, 0, classes // 2])
    _check(s.astype(dtype), t.astype(dtype), y, dtype, temperature, 0.5)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("jump", [40.0, 300.0, 1e4])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_maximum_jumps_far_above_the_rest(
    rng: np.random.Generator, dtype: Any, jump: float, reduction: str
) -> None:
    """Everything before the jump ends up with (nearly) no probability at all."""
    classes = LONG + 9000
    s = rng.standard_normal((2, classes)) * 2
    t = rng.standard_normal((2, classes)) * 2
    s[0, LONG + 7000 :] += jump
    t[0, LONG + 5000 :] += jump
    s[1, 3000:] += jump
    t[1, LONG + 8000 :] += jump
    y = np.array([classes - 5, 10])
    for temperature, alpha in [(1.0, 0.5), (2.0, 0.5), (4.0, 1.0), (1.5, 0.0)]:
        _check(s.astype(dtype), t.astype(dtype), y, dtype, temperature, alpha, reduction)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("head", [2048, LONG + 5000])
def test_masked_head_gives_the_unmasked_result(
    rng: np.random.Generator, dtype: Any, head: int
) -> None:
    """Classes masked by -inf in both inputs, in whole pieces at the start, count for nothing."""
    classes = head + LONG
    s = rng.standard_normal((2, classes)) * 3
    t = rng.standard_normal((2, classes)) * 3
    s[:, :head] = -INF
    t[:, :head] = -INF
    s[1, head + 1000 : head + 2500] = -INF  # and a masked stretch further on
    t[1, head + 1000 : head + 2500] = -INF
    y = np.array([head + 7, classes - 1])
    kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": 0.5, "reduction": "none"}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(
        s.astype(dtype), t.astype(dtype), y
    )
    assert np.all(np.isfinite(loss))
    assert np.all(grad[np.isneginf(s)] == 0.0)
    for i in range(2):
        keep = np.isfinite(s[i])
        label = int(np.count_nonzero(keep[: y[i]]))
        row_s = s[i : i + 1, keep].astype(dtype)
        row_t = t[i : i + 1, keep].astype(dtype)
        assert_matches_reference(
            loss[i : i + 1], grad[i : i + 1, keep], row_s, row_t, [label], dtype=dtype, **kwargs
        )


@pytest.mark.parametrize("dtype", FLOATS)
def test_teacher_masked_at_the_start_only(rng: np.random.Generator, dtype: Any) -> None:
    """The teacher has no finite logit in the first pieces; the student has them all."""
    classes = LONG + 7000
    s = rng.standard_normal((1, classes)) * 3
    t = rng.standard_normal((1, classes)) * 3
    t[0, : LONG + 4500] = -INF
    _check(s.astype(dtype), t.astype(dtype), np.array([3]), dtype, 2.0, 0.5)


@pytest.mark.parametrize("dtype", FLOATS)
def test_student_masked_at_the_start_where_the_teacher_has_mass(dtype: Any) -> None:
    classes = LONG + 7000
    s = np.zeros((1, classes), dtype=dtype)
    t = np.zeros((1, classes), dtype=dtype)
    s[0, : LONG + 4500] = -INF
    loss = kdloss.distillation_loss(s, t, [LONG + 4600], temperature=2.0, alpha=0.5)
    assert loss == INF
    assert kdloss.kl_divergence(s, t) == INF


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", [np.nan, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("where", [0, LONG + 3000, LONG + 6997])
@pytest.mark.parametrize("which", ["student", "teacher"])
def test_nan_or_inf_anywhere_in_a_long_row_gives_nan(
    rng: np.random.Generator, dtype: Any, bad: float, where: int, which: str
) -> None:
    classes = LONG + 7000
    s = (rng.standard_normal((2, classes)) * 3).astype(dtype)
    t = (rng.standard_normal((2, classes)) * 3).astype(dtype)
    (s if which == "student" else t)[0, where] = bad
    y = np.array([5, 6])
    kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": 0.5, "reduction": "none"}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    assert np.isnan(loss[0])
    assert np.any(np.isnan(grad[0]))
    assert np.isnan(kdloss.distillation_loss(s, t, y, **kwargs)[0])
    assert_matches_reference(loss[1:], grad[1:], s[1:], t[1:], y[1:], dtype=dtype, **kwargs)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fully_masked_long_row_is_nan_unless_ignored(dtype: Any) -> None:
    classes = LONG + 5000
    s = np.full((2, classes), -INF, dtype=dtype)
    s[1] = np.linspace(-1.0, 1.0, classes)
    loss = kdloss.distillation_loss(s, s, [0, 3], reduction="none")
    assert np.isnan(loss[0])
    assert np.isfinite(loss[1])
    loss, grad = kdloss.DistillationLoss().forward_backward(s, s, np.array([IGNORE, 3]))
    assert np.all(grad[0] == 0.0)
    want = float(reference.distillation_loss(s[1:], s[1:], [3]))
    assert loss == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("offset", [-3000.0, 3000.0])
def test_masked_head_before_logits_far_from_zero(
    rng: np.random.Generator, dtype: Any, offset: float
) -> None:
    """Masked pieces are taken against 0 before any finite logit is seen; whatever the later
    maximum, they stay at probability 0 and gradient 0."""
    classes = LONG + 6000
    s = rng.standard_normal((1, classes)) + offset
    t = rng.standard_normal((1, classes)) + offset
    s[0, : (LONG + 4096)] = -INF
    t[0, : (LONG + 4096)] = -INF
    kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": 0.5, "reduction": "none"}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(
        s.astype(dtype), t.astype(dtype), np.array([LONG + 5000])
    )
    assert np.all(grad[0, : (LONG + 4096)] == 0.0)
    assert_matches_reference(
        loss,
        grad[:, (LONG + 4096) :],
        s[:, (LONG + 4096) :].astype(dtype),
        t[:, (LONG + 4096) :].astype(dtype),
        [5000 - 4096],
        dtype=dtype,
        **kwargs,
    )
