"""Special values: no clamping, masked (-inf) classes, NaN and +inf, empty and ignored rows."""

from __future__ import annotations

from typing import Any

import kdloss
import numpy as np
import pytest
from kdloss import reference

INF = np.inf
REDUCTIONS = ["mean", "sum", "none"]
FLOATS = [np.float64, np.float32]


def _rtol(dtype: Any) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


# ---------------------------------------------------------------------------------------------
# No clamping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_confidently_wrong_costs_its_true_cross_entropy(dtype: Any) -> None:
    s = np.array([[0.0, 100.0]], dtype=dtype)
    y = np.array([0])
    assert kdloss.cross_entropy(s, y) == pytest.approx(100.0, rel=_rtol(dtype))
    assert kdloss.cross_entropy(s[0], 0) == pytest.approx(100.0, rel=_rtol(dtype))
    loss = kdloss.distillation_loss(s, s, y, alpha=0.0)
    assert loss == pytest.approx(100.0, rel=_rtol(dtype))
    loss, grad = kdloss.DistillationLoss(alpha=0.0).forward_backward(s, s, y)
    assert loss == pytest.approx(100.0, rel=_rtol(dtype))
    np.testing.assert_allclose(grad, [[-1.0, 1.0]], rtol=_rtol(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("gap", [30.0, 88.0, 200.0, 1000.0, 1e4])
def test_cross_entropy_equals_the_gap(dtype: Any, gap: float) -> None:
    s = np.array([[0.0, gap, -gap]], dtype=dtype)
    want = float(reference.cross_entropy(s, [0]))
    assert kdloss.cross_entropy(s, [0]) == pytest.approx(want, rel=_rtol(dtype))
    assert kdloss.cross_entropy(s, [0]) == pytest.approx(gap, rel=_rtol(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_kl_of_nearly_disjoint_distributions_is_not_capped(dtype: Any) -> None:
    # log(1e-10) = -23.03 was the clamp of the original implementation.
    s = np.array([[0.0, 60.0]], dtype=dtype)
    t = np.array([[60.0, 0.0]], dtype=dtype)
    want = float(reference.kl_divergence(s, t))
    assert want > 59.0
    assert kdloss.kl_divergence(s, t) == pytest.approx(want, rel=_rtol(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_tiny_probabilities_stay_positive(dtype: Any) -> None:
    x = np.array([0.0, -30.0, -60.0], dtype=dtype)
    p = kdloss.softmax(x)
    np.testing.assert_allclose(p, reference.softmax(x), rtol=_rtol(dtype))
    log_p = kdloss.log_softmax(x)
    np.testing.assert_allclose(log_p, reference.log_softmax(x), rtol=_rtol(dtype))


@pytest.mark.parametrize(
    ("dtype", "temperature"),
    [(np.float64, 1e-300), (np.float64, 1e-310), (np.float32, 1e-30), (np.float32, 1e-40)],
    ids=["float64-1e-300", "float64-1e-310", "float32-1e-30", "float32-1e-40"],
)
def test_tiny_temperature_stays_finite(dtype: Any, temperature: float) -> None:
    """A valid temperature so small that x / T overflows still gives the limit, not NaN."""
    s = np.array([[0.0, 1.0, -2.0], [1e10, 0.0, 3.0]], dtype=dtype)
    t = np.array([[1.0, 0.0, -2.0], [1e10, 0.0, 3.0]], dtype=dtype)
    y = np.array([1, 0])
    p = kdloss.softmax(s, temperature=temperature)
    np.testing.assert_array_equal(p, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    log_p = kdloss.log_softmax(s, temperature=temperature)
    assert log_p[0, 1] == 0.0
    assert log_p[1, 0] == 0.0
    kl = kdloss.kl_divergence(s, t, temperature=temperature, reduction="none")
    assert kl[1] == 0.0
    assert kl[0] > 0.0
    loss, grad = kdloss.DistillationLoss(temperature, 0.5).forward_backward(s, t, y)
    want, want_grad = reference.distillation_loss_and_grad(
        s, t, y, temperature=temperature, alpha=0.5
    )
    assert np.isfinite(want)
    assert loss == pytest.approx(want, rel=_rtol(dtype))
    np.testing.assert_allclose(grad, want_grad, rtol=_rtol(dtype), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Masked classes (-inf)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (2.0, 1.0), (3.0, 0.0)])
def test_masked_classes_give_the_unmasked_result(
    rng: np.random.Generator, dtype: Any, temperature: float, alpha: float, reduction: str
) -> None:
    """Masking a class with -inf in both inputs is the same as removing the class."""
    rows, classes = 6, 12
    s = rng.standard_normal((rows, classes)) * 3
    t = rng.standard_normal((rows, classes)) * 3
    mask = rng.random((rows, classes)) < 0.4
    mask[:, 0] = False  # every row keeps at least one class
    y = np.array([int(rng.choice(np.flatnonzero(~row))) for row in mask])
    y[2] = -100
    s_masked = np.where(mask, -INF, s).astype(dtype)
    t_masked = np.where(mask, -INF, t).astype(dtype)
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": reduction}
    loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s_masked, t_masked, y)
    assert np.all(np.isfinite(loss))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[mask] == 0.0)

    # Row by row, the loss of the row with its masked classes removed.
    rtol = _rtol(dtype)
    per_row = kdloss.distillation_loss(
        s_masked, t_masked, y, temperature=temperature, alpha=alpha, reduction="none"
    )
    for i in range(rows):
        keep = ~mask[i]
        if y[i] == -100:
            assert per_row[i] == 0.0
            assert np.all(grad[i] == 0.0)
            continue
        label = int(np.count_nonzero(keep[: y[i]]))
        want, want_grad = reference.distillation_loss_and_grad(
            s_masked[i, keep],
            t_masked[i, keep],
            label,
            temperature=temperature,
            alpha=alpha,
            reduction="sum",
        )
        assert per_row[i] == pytest.approx(want, rel=rtol, abs=rtol * 10 * temperature**2)
        if reduction != "mean":
            np.testing.assert_allclose(grad[i, keep], want_grad, rtol=rtol, atol=rtol * 10)

    want_loss, want_grad = reference.distillation_loss_and_grad(s_masked, t_masked, y, **kwargs)
    np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=rtol * 10 * temperature**2)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 10)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_of_masked_classes_is_exactly_zero(dtype: Any) -> None:
    x = np.array([[1.0, -INF, 2.0], [-INF, -INF, 5.0]], dtype=dtype)
    p = kdloss.softmax(x, temperature=2.0)
    assert p[0, 1] == 0.0
    assert p[1, 0] == 0.0
    assert p[1, 1] == 0.0
    assert p[1, 2] == 1.0
    log_p = kdloss.log_softmax(x, temperature=2.0)
    assert log_p[0, 1] == -INF
    assert log_p[1, 2] == 0.0
    np.testing.assert_allclose(
        log_p[0, [0, 2]], reference.log_softmax(x, temperature=2.0)[0, [0, 2]], rtol=_rtol(dtype)
    )


@pytest.mark.parametrize("dtype", FLOATS)
def test_teacher_masked_student_finite(dtype: Any) -> None:
    s = np.array([[1.0, 0.5, 2.0, -1.0]], dtype=dtype)
    t = np.array([[0.0, -INF, 1.0, -INF]], dtype=dtype)
    want_loss, want_grad = reference.distillation_loss_and_grad(s, t, [2], temperature=2.0)
    loss, grad = kdloss.DistillationLoss(2.0).forward_backward(s, t, [2])
    assert np.isfinite(loss)
    assert loss == pytest.approx(want_loss, rel=_rtol(dtype))
    np.testing.assert_allclose(grad, want_grad, rtol=_rtol(dtype), atol=_rtol(dtype) * 1e-3)
    kl = kdloss.kl_divergence(s, t, temperature=2.0)
    assert kl == pytest.approx(reference.kl_divergence(s, t, temperature=2.0), rel=_rtol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_student_masked_where_teacher_has_mass_is_infinite(dtype: Any, reduction: str) -> None:
    s = np.array([[1.0, -INF, 2.0], [0.0, 1.0, 2.0]], dtype=dtype)
    t = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], dtype=dtype)
    y = np.array([0, 1])
    kl = kdloss.kl_divergence(s, t, reduction=reduction)
    loss = kdloss.distillation_loss(s, t, y, temperature=2.0, reduction=reduction)
    loss_kd, grad = kdloss.DistillationLoss(2.0, 1.0, reduction=reduction).forward_backward(s, t, y)
    if reduction == "none":
        assert kl[0] == INF
        assert loss[0] == INF
        assert loss_kd[0] == INF
        assert np.isfinite(loss[1])
        assert np.isfinite(kl[1])
    else:
        assert kl == INF
        assert loss == INF
        assert loss_kd == INF
    assert grad.shape == s.shape


@pytest.mark.parametrize("dtype", FLOATS)
def test_label_on_a_masked_class_is_infinite(dtype: Any) -> None:
    s = np.array([[1.0, -INF, 2.0]], dtype=dtype)
    assert kdloss.cross_entropy(s, [1]) == INF
    assert kdloss.distillation_loss(s, s, [1], alpha=0.5) == INF


def test_all_masked_row_does_not_crash() -> None:
    s = np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]])
    out = kdloss.softmax(s)
    assert out.shape == s.shape
    np.testing.assert_allclose(out[1], reference.softmax(s[1]), rtol=1e-12)
    loss = kdloss.distillation_loss(s, s, np.array([-100, 2]))
    assert loss == pytest.approx(float(reference.distillation_loss(s[1:], s[1:], [2])), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# NaN and +inf: NaN where the row is used, nothing where it is not
# ---------------------------------------------------------------------------------------------


BAD_VALUES = [np.nan, INF]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("column", [0, 2])  # the label's class and another one
def test_bad_student_value_gives_nan(
    dtype: Any, bad: float, alpha: float, reduction: str, column: int
) -> None:
    s = np.array([[1.0, 0.5, 2.0, -1.0], [0.0, 1.0, 2.0, 3.0]], dtype=dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.5], [0.0, 1.0, 2.0, 3.0]], dtype=dtype)
    y = np.array([0, 3])
    s[0, column] = bad
    kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": alpha, "reduction": reduction}
    loss = kdloss.distillation_loss(s, t, y, **kwargs)
    loss_fb, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
    if reduction == "none":
        assert np.isnan(loss[0])
        assert np.isnan(loss_fb[0])
        assert np.isfinite(loss[1])
        assert np.all(np.isfinite(grad[1]))
    else:
        assert np.isnan(loss)
        assert np.isnan(loss_fb)
    assert np.any(np.isnan(grad[0]))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_bad_teacher_value_gives_nan(dtype: Any, bad: float, alpha: float) -> None:
    s = np.array([[1.0, 0.5, 2.0, -1.0], [0.0, 1.0, 2.0, 3.0]], dtype=dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.5], [0.0, 1.0, 2.0, 3.0]], dtype=dtype)
    t[0, 1] = bad
    y = np.array([0, 3])
    assert np.isnan(kdloss.distillation_loss(s, t, y, alpha=alpha))
    assert np.isnan(kdloss.kl_divergence(s, t))
    per_row = kdloss.kl_divergence(s, t, reduction="none")
    assert np.isnan(per_row[0])
    assert np.isfinite(per_row[1])
    loss, grad = kdloss.DistillationLoss(alpha=alpha).forward_backward(s, t, y)
    assert np.isnan(loss)
    assert np.any(np.isnan(grad[0]))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf"])
def test_bad_teacher_value_unused_when_alpha_is_zero(dtype: Any, bad: float) -> None:
    s = np.array([[1.0, 0.5, 2.0, -1.0]], dtype=dtype)
    t = np.array([[0.0, bad, 1.0, 0.5]], dtype=dtype)
    loss, grad = kdloss.DistillationLoss(alpha=0.0).forward_backward(s, t, [2])
    assert loss == pytest.approx(float(reference.cross_entropy(s, [2])), rel=_rtol(dtype))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", [np.nan, INF, -INF], ids=["nan", "inf", "-inf"])
def test_bad_values_in_ignored_rows_do_not_count(dtype: Any, bad: float) -> None:
    s = np.array([[1.0, 0.5, 2.0], [bad, bad, 1.0], [0.0, 3.0, -1.0]], dtype=dtype)
    t = np.array([[0.0, 1.0, 1.0], [1.0, bad, bad], [2.0, 0.0, 1.0]], dtype=dtype)
    y = np.array([1, -100, 2])
    keep = [0, 2]
    for alpha in (0.0, 0.5, 1.0):
        for reduction in REDUCTIONS:
            kwargs: dict[str, Any] = {"temperature": 2.0, "alpha": alpha, "reduction": reduction}
            want, want_grad = reference.distillation_loss_and_grad(
                s[keep], t[keep], y[keep], **kwargs
            )
            loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
            assert np.all(grad[1] == 0.0)
            rtol = _rtol(dtype)
            if reduction == "none":
                assert loss[1] == 0.0
                np.testing.assert_allclose(loss[keep], want, rtol=rtol, atol=rtol)
                np.testing.assert_allclose(grad[keep], want_grad, rtol=rtol, atol=rtol * 1e-2)
            else:
                assert np.isfinite(loss)
                assert loss == pytest.approx(want, rel=rtol, abs=rtol)
                np.testing.assert_allclose(grad[keep], want_grad, rtol=rtol, atol=rtol * 1e-2)
            again = kdloss.distillation_loss(s, t, y, **kwargs)
            np.testing.assert_array_equal(again, loss)
    ce = kdloss.cross_entropy(s, y)
    assert ce == pytest.approx(float(reference.cross_entropy(s[keep], y[keep])), rel=_rtol(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_of_nan_or_inf_row_is_nan(dtype: Any) -> None:
    x = np.array([[1.0, np.nan, 0.0], [1.0, INF, 0.0], [1.0, 2.0, 3.0]], dtype=dtype)
    for fn in (kdloss.softmax, kdloss.log_softmax):
        out = fn(x)
        assert np.any(np.isnan(out[0]))
        assert np.any(np.isnan(out[1]))
        assert np.all(np.isfinite(out[2]))


# ---------------------------------------------------------------------------------------------
# Empty batches and rows that do not count
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 4), (2, 0, 7)], ids=str)
def test_no_rows(dtype: Any, shape: tuple[int, ...]) -> None:
    s = np.zeros(shape, dtype=dtype)
    y = np.zeros(shape[:-1], dtype=np.int64)
    for reduction in REDUCTIONS:
        loss, grad = kdloss.DistillationLoss(reduction=reduction).forward_backward(s, s, y)
        assert grad.shape == shape
        assert grad.dtype == dtype
        if reduction == "none":
            assert isinstance(loss, np.ndarray)
            assert loss.shape == shape[:-1]
        else:
            assert type(loss) is float
            assert loss == 0.0
    assert kdloss.softmax(s).shape == shape
    assert kdloss.kl_divergence(s, s) == 0.0
    assert kdloss.cross_entropy(s, y) == 0.0


@pytest.mark.parametrize("dtype", FLOATS)
def test_all_rows_ignored_mean_is_zero_not_nan(dtype: Any) -> None:
    s = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=dtype)
    t = np.array([[0.0, 2.0], [1.0, 1.0]], dtype=dtype)
    y = np.array([-100, -100])
    for alpha in (0.0, 0.5, 1.0):
        loss, grad = kdloss.DistillationLoss(2.0, alpha).forward_backward(s, t, y)
        assert loss == 0.0
        assert type(loss) is float
        assert np.all(grad == 0.0)
        assert kdloss.distillation_loss(s, t, y, alpha=alpha, reduction="sum") == 0.0
    assert kdloss.cross_entropy(s, y) == 0.0
    np.testing.assert_array_equal(kdloss.cross_entropy(s, y, reduction="none"), [0.0, 0.0])


def test_one_class() -> None:
    s = np.array([[3.0], [-2.0]])
    y = np.array([0, 0])
    np.testing.assert_array_equal(kdloss.softmax(s), [[1.0], [1.0]])
    np.testing.assert_array_equal(kdloss.log_softmax(s), [[0.0], [0.0]])
    loss, grad = kdloss.DistillationLoss(2.0, 0.5).forward_backward(s, s + 1, y)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, [[0.0], [0.0]])


# ---------------------------------------------------------------------------------------------
# Special values at every position of a long row (vector bodies and scalar tails alike)
# ---------------------------------------------------------------------------------------------

POSITIONS = [0, 1, 7, 8, 15, 16, 17, 31, 32, 63, 64, 100, 127, 128, 998, 999]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf"])
def test_bad_value_anywhere_in_a_long_row(dtype: Any, bad: float) -> None:
    rng = np.random.default_rng(5)
    classes = 1000
    base_s = rng.standard_normal(classes).astype(dtype)
    base_t = rng.standard_normal(classes).astype(dtype)
    for position in POSITIONS:
        for where in ("student", "teacher"):
            s = np.stack([base_s, base_s])
            t = np.stack([base_t, base_t])
            (s if where == "student" else t)[0, position] = bad
            y = np.array([3, 3])
            loss = kdloss.distillation_loss(s, t, y, temperature=2.0, reduction="none")
            assert np.isnan(loss[0]), (where, position, loss)
            assert np.isfinite(loss[1])
            kl = kdloss.kl_divergence(s, t, temperature=2.0, reduction="none")
            assert np.isnan(kl[0]), (where, position, kl)
            if where == "student":
                ce = kdloss.cross_entropy(s, y, reduction="none")
                assert np.isnan(ce[0]), (position, ce)
                p = kdloss.softmax(s)
                assert np.any(np.isnan(p[0])), position
                assert np.all(np.isfinite(p[1]))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("classes", [5, 16, 17, 33, 100, 1000, 4099])
def test_masked_classes_in_long_rows(dtype: Any, classes: int) -> None:
    rng = np.random.default_rng(classes)
    rows = 6
    s = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
    t = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
    mask = rng.random((rows, classes)) < 0.5
    mask[:, 0] = False
    mask[1, :] = False
    mask[1, 1:] = True  # a row with a single class left
    mask[2, -1] = True  # the last element, often in a tail
    s[mask] = -INF
    t[mask] = -INF
    y = np.zeros(rows, dtype=np.int64)
    for temperature, alpha in [(1.0, 0.5), (2.0, 1.0), (0.5, 0.0)]:
        kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha, "reduction": "none"}
        want, want_grad = reference.distillation_loss_and_grad(s, t, y, **kwargs)
        loss, grad = kdloss.DistillationLoss(**kwargs).forward_backward(s, t, y)
        assert np.all(np.isfinite(loss))
        assert np.all(np.isfinite(grad))
        assert np.all(grad[mask] == 0.0)
        rtol = _rtol(dtype)
        scale = 20.0 * (1 + temperature**2)
        np.testing.assert_allclose(loss, want, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 1e-1)
        p = kdloss.softmax(s, temperature=temperature)
        assert np.all(p[mask] == 0.0)
        np.testing.assert_allclose(p.sum(axis=-1, dtype=np.float64), 1.0, rtol=rtol)
