"""Mathematical properties of softmax and the losses, searched by hypothesis.

These are the properties the original implementation's tests tried to falsify (sums to one,
positive, order-preserving, translation-invariant, entropy rising with T, argmax kept under T),
and identities between the public functions.
"""

from __future__ import annotations

import math
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOAT_DTYPES = st.sampled_from([np.float64, np.float32])
TEMPERATURES = st.floats(min_value=0.05, max_value=20.0)
ALPHAS = st.floats(min_value=0.0, max_value=1.0)
REDUCTIONS = st.sampled_from(["mean", "sum", "none"])


def _rows(
    dtype: Any,
    bound: float = 50.0,
    max_rows: int = 4,
    max_classes: int = 40,
) -> st.SearchStrategy[npt.NDArray[Any]]:
    shapes = st.one_of(
        hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=max_classes),
        st.tuples(st.integers(1, max_rows), st.integers(1, max_classes)),
    )
    elements = st.floats(
        min_value=-bound, max_value=bound, allow_nan=False, allow_infinity=False, width=32
    )
    return hnp.arrays(dtype, shapes, elements=elements)


@st.composite
def float_rows(
    draw: st.DrawFn, bound: float = 50.0, max_rows: int = 4, max_classes: int = 40
) -> npt.NDArray[Any]:
    dtype = draw(FLOAT_DTYPES)
    return draw(_rows(dtype, bound, max_rows, max_classes))


@st.composite
def student_teacher_labels(
    draw: st.DrawFn, bound: float = 20.0
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]]:
    dtype = draw(FLOAT_DTYPES)
    rows = draw(st.integers(1, 5))
    classes = draw(st.integers(1, 30))
    elements = st.floats(
        min_value=-bound, max_value=bound, allow_nan=False, allow_infinity=False, width=32
    )
    s = draw(hnp.arrays(dtype, (rows, classes), elements=elements))
    t = draw(hnp.arrays(dtype, (rows, classes), elements=elements))
    y = draw(hnp.arrays(np.int64, (rows,), elements=st.integers(0, classes - 1)))
    return s, t, y


def _tol(x: npt.NDArray[Any]) -> float:
    return 1e-12 if x.dtype == np.float64 else 1e-5


def _term_scale(
    s: npt.NDArray[Any], temperature: float, alpha: float, bound: float = 20.0
) -> float:
    """The size of the terms a row's loss is made of; rounding errors scale with it."""
    log_c = math.log(s.shape[-1]) + 1.0
    kl_part = alpha * temperature**2 * (2 * bound / temperature + log_c)
    return kl_part + (1 - alpha) * (bound + log_c)


def _entropy(p: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    q = p.astype(np.float64)
    logs = np.log(np.where(q > 0, q, 1.0))
    out: npt.NDArray[np.float64] = -np.sum(q * logs, axis=-1)
    return out


@given(float_rows(), TEMPERATURES)
def test_softmax_sums_to_one(x: npt.NDArray[Any], temperature: float) -> None:
    p = kdloss.softmax(x, temperature=temperature)
    sums = p.astype(np.float64).sum(axis=-1)
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=_tol(x))


@given(float_rows(bound=20.0), st.floats(min_value=0.5, max_value=20.0))
def test_softmax_strictly_positive_and_at_most_one(x: npt.NDArray[Any], temperature: float) -> None:
    # Spread at most 40 / 0.5 = 80 in logits: exp(-80) is a normal number in float32.
    p = kdloss.softmax(x, temperature=temperature)
    assert np.all(p > 0)
    assert np.all(p <= 1)
    assert np.all(np.isfinite(p))


@given(float_rows(bound=500.0), TEMPERATURES)
def test_softmax_bounded(x: npt.NDArray[Any], temperature: float) -> None:
    p = kdloss.softmax(x, temperature=temperature)
    assert np.all(np.isfinite(p))
    assert np.all(p >= 0)
    assert np.all(p <= 1)


@given(float_rows(), TEMPERATURES)
def test_softmax_preserves_order(x: npt.NDArray[Any], temperature: float) -> None:
    p = kdloss.softmax(x, temperature=temperature).astype(np.float64)
    eps = float(np.finfo(x.dtype).eps)
    rows_x = x.reshape(-1, x.shape[-1])
    rows_p = p.reshape(-1, x.shape[-1])
    for xr, pr in zip(rows_x, rows_p):
        less = xr[:, None] < xr[None, :]
        # x_i < x_j implies p_i <= p_j (up to a few units of rounding).
        assert np.all(~less | (pr[:, None] <= pr[None, :] * (1 + 8 * eps)))
        equal = xr[:, None] == xr[None, :]
        close = np.isclose(pr[:, None], pr[None, :], rtol=8 * eps, atol=0)
        assert np.all(~equal | close)


@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=30),
        elements=st.integers(-400, 400).map(lambda k: k / 8),
    ),
    st.integers(-1000, 1000),
    st.sampled_from([1.0, 2.0, 0.5, 3.0]),
)
def test_softmax_translation_invariant(
    x: npt.NDArray[np.float64], shift: int, temperature: float
) -> None:
    # Multiples of 1/8 and an integer shift: x + shift is exact, so any difference is the
    # implementation's.
    base = kdloss.softmax(x, temperature=temperature)
    moved = kdloss.softmax(x + shift, temperature=temperature)
    np.testing.assert_allclose(moved, base, rtol=1e-12, atol=1e-300)
    base_log = kdloss.log_softmax(x, temperature=temperature)
    moved_log = kdloss.log_softmax(x + shift, temperature=temperature)
    atol = 1e-12 * (float(np.max(np.abs(base_log))) + 1.0)
    np.testing.assert_allclose(moved_log, base_log, rtol=1e-12, atol=atol)


@given(
    float_rows(),
    st.floats(min_value=0.1, max_value=10.0),
    st.floats(min_value=1.0, max_value=10.0),
)
def test_entropy_non_decreasing_in_temperature(
    x: npt.NDArray[Any], low: float, factor: float
) -> None:
    high = low * factor
    h_low = _entropy(kdloss.softmax(x, temperature=low))
    h_high = _entropy(kdloss.softmax(x, temperature=high))
    tol = 1e-9 if x.dtype == np.float64 else 1e-4
    assert np.all(h_high >= h_low - tol * (1 + np.abs(h_low)))


def test_entropy_rises_strictly_with_temperature() -> None:
    x = np.array([[5.0, 2.0, 0.1, -3.0]])
    entropies = [float(_entropy(kdloss.softmax(x, temperature=t))[0]) for t in (0.5, 1, 2, 10)]
    assert entropies == sorted(entropies)
    assert len(set(entropies)) == len(entropies)
    assert entropies[-1] < math.log(4)


@given(float_rows(), st.sampled_from([1.0, 2.0, 3.0, 5.0, 10.0, 0.3]))
def test_argmax_kept_under_temperature(x: npt.NDArray[Any], temperature: float) -> None:
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    top2 = np.sort(rows, axis=-1)[:, -2:] if rows.shape[-1] > 1 else None
    if top2 is not None:
        # A unique maximum, by a margin that the probabilities can resolve.
        assume(bool(np.all(top2[:, 1] - top2[:, 0] > 1e-3)))
    p = kdloss.softmax(x, temperature=temperature).reshape(rows.shape)
    np.testing.assert_array_equal(np.argmax(p, axis=-1), np.argmax(rows, axis=-1))


@given(float_rows(), TEMPERATURES)
def test_log_softmax_is_log_of_softmax(x: npt.NDArray[Any], temperature: float) -> None:
    p = kdloss.softmax(x, temperature=temperature).astype(np.float64)
    log_p = kdloss.log_softmax(x, temperature=temperature).astype(np.float64)
    assert np.all(log_p <= 1e-12)
    np.testing.assert_allclose(np.exp(log_p), p, rtol=64 * _tol(x), atol=1e-30)


@given(student_teacher_labels(bound=30.0), TEMPERATURES)
def test_kl_non_negative(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]], temperature: float
) -> None:
    s, t, _ = data
    kl = kdloss.kl_divergence(s, t, temperature=temperature, reduction="none")
    scale = 60.0 / temperature + math.log(s.shape[-1]) + 1.0
    tol = 1e-12 if kl.dtype == np.float64 else 1e-6
    assert np.all(kl >= -tol * scale)


@given(float_rows(), TEMPERATURES, REDUCTIONS)
def test_kl_zero_for_identical_inputs(
    x: npt.NDArray[Any], temperature: float, reduction: str
) -> None:
    kl = kdloss.kl_divergence(x, x.copy(), temperature=temperature, reduction=reduction)
    scale = 50.0 / temperature + math.log(x.shape[-1]) + 1.0
    tol = 1e-12 if x.dtype == np.float64 else 1e-6
    rows = int(np.prod(x.shape[:-1]))
    np.testing.assert_allclose(kl, 0.0, atol=tol * scale * rows)


@given(student_teacher_labels(), TEMPERATURES, REDUCTIONS)
def test_alpha_one_is_t_squared_kl(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
    temperature: float,
    reduction: str,
) -> None:
    s, t, y = data
    loss = kdloss.distillation_loss(s, t, temperature=temperature, alpha=1.0, reduction=reduction)
    loss_with_labels = kdloss.distillation_loss(
        s, t, y, temperature=temperature, alpha=1.0, reduction=reduction
    )
    kl = kdloss.kl_divergence(s, t, temperature=temperature, reduction=reduction)
    expected = np.asarray(kl, dtype=np.float64) * temperature**2
    rtol = 1e-12 if s.dtype == np.float64 else 1e-5
    rows = 1 if reduction == "mean" else len(y)
    atol = (1e-12 if s.dtype == np.float64 else 1e-6) * _term_scale(s, temperature, 1.0) * rows
    np.testing.assert_allclose(loss, expected, rtol=rtol, atol=atol)
    np.testing.assert_allclose(loss_with_labels, expected, rtol=rtol, atol=atol)


@given(student_teacher_labels(), TEMPERATURES, REDUCTIONS)
def test_alpha_zero_is_cross_entropy_and_ignores_teacher(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
    temperature: float,
    reduction: str,
) -> None:
    s, t, y = data
    ce = kdloss.cross_entropy(s, y, reduction=reduction)
    loss = kdloss.distillation_loss(
        s, t, y, temperature=temperature, alpha=0.0, reduction=reduction
    )
    rtol = 1e-12 if s.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(loss, ce, rtol=rtol)
    # The KL term has weight 0, so it is not computed: a NaN teacher changes nothing.
    nan_teacher = np.full_like(t, np.nan)
    loss_nan = kdloss.distillation_loss(
        s, nan_teacher, y, temperature=temperature, alpha=0.0, reduction=reduction
    )
    assert np.all(np.isfinite(loss_nan))
    np.testing.assert_allclose(loss_nan, ce, rtol=rtol)


@given(student_teacher_labels(), TEMPERATURES, ALPHAS)
def test_loss_is_weighted_sum_of_terms(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
    temperature: float,
    alpha: float,
) -> None:
    s, t, y = data
    loss = kdloss.distillation_loss(s, t, y, temperature=temperature, alpha=alpha, reduction="none")
    kl = kdloss.kl_divergence(s, t, temperature=temperature, reduction="none")
    ce = kdloss.cross_entropy(s, y, reduction="none")
    expected = alpha * temperature**2 * kl.astype(np.float64) + (1 - alpha) * ce.astype(np.float64)
    rtol = 1e-12 if s.dtype == np.float64 else 1e-5
    atol = (1e-12 if s.dtype == np.float64 else 1e-6) * _term_scale(s, temperature, alpha)
    np.testing.assert_allclose(loss, expected, rtol=rtol, atol=atol)


@given(student_teacher_labels(), TEMPERATURES, ALPHAS, st.data())
def test_reductions_agree(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
    temperature: float,
    alpha: float,
    draw: st.DataObject,
) -> None:
    s, t, y = data
    ignored = draw.draw(hnp.arrays(np.bool_, y.shape))
    y = np.where(ignored, -100, y)
    kwargs: dict[str, Any] = {"temperature": temperature, "alpha": alpha}
    per_row = kdloss.distillation_loss(s, t, y, reduction="none", **kwargs)
    total = kdloss.distillation_loss(s, t, y, reduction="sum", **kwargs)
    mean = kdloss.distillation_loss(s, t, y, reduction="mean", **kwargs)
    count = int(np.count_nonzero(~ignored))
    assert np.all(per_row[ignored] == 0)
    rtol = 1e-12 if s.dtype == np.float64 else 1e-5
    # Rows are rounded to the output dtype before this sum, the library's total is not.
    atol = rtol * float(np.sum(np.abs(per_row.astype(np.float64)))) + 1e-300
    np.testing.assert_allclose(total, per_row.astype(np.float64).sum(), rtol=rtol, atol=atol)
    if count == 0:
        assert mean == 0.0
    else:
        np.testing.assert_allclose(mean, total / count, rtol=rtol, atol=atol / count)


@given(student_teacher_labels(), TEMPERATURES, ALPHAS)
def test_grad_rows_sum_to_zero(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
    temperature: float,
    alpha: float,
) -> None:
    # Both softmax(s/T) - softmax(t/T) and softmax(s) - onehot sum to 0 along a row.
    s, t, y = data
    _, grad = kdloss.DistillationLoss(temperature, alpha, reduction="sum").forward_backward(s, t, y)
    tol = 1e-12 if s.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(
        grad.astype(np.float64).sum(axis=-1), 0.0, atol=tol * 8 * (alpha * temperature + 1)
    )


@given(student_teacher_labels())
def test_cross_entropy_non_negative_and_log_c_for_uniform(
    data: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]],
) -> None:
    s, _, y = data
    ce = kdloss.cross_entropy(s, y, reduction="none")
    assert np.all(ce >= 0)
    uniform = np.zeros_like(s)
    np.testing.assert_allclose(
        kdloss.cross_entropy(uniform, y, reduction="none"),
        math.log(s.shape[-1]),
        rtol=_tol(s),
    )


@given(
    st.floats(min_value=-1e4, max_value=1e4, width=32),
    st.integers(1, 300),
    FLOAT_DTYPES,
    TEMPERATURES,
)
def test_identical_logits_give_uniform_probabilities(
    value: float, classes: int, dtype: Any, temperature: float
) -> None:
    x = np.full((2, classes), value, dtype=dtype)
    p = kdloss.softmax(x, temperature=temperature)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(p, 1.0 / classes, rtol=rtol)
    log_p = kdloss.log_softmax(x, temperature=temperature)
    np.testing.assert_allclose(log_p, -math.log(classes), rtol=rtol, atol=1e-300)
