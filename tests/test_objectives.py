"""The loss's options and per-call selections against the float64 reference: the divergence,
``t2_scale``, ``mask``, ``normalizer``, ``return_components``, :func:`kdloss.divergence` and
:func:`kdloss.cross_entropy`'s selections; gradient accumulation; and the checks of each."""

from __future__ import annotations

import math
import pickle
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from helpers import IGNORE, TOLERANCES, labels, logits
from hypothesis import given, settings
from hypothesis import strategies as st
from kdloss import reference

Array = npt.NDArray[Any]


def _magnitude(s: Array, t: Array, temperature: float, alpha: float, t2_scale: bool) -> float:
    """A bound on the size of one row's terms, as the README's accuracy claim states it (the
    divergence's weight is ``alpha*T**2`` with ``t2_scale``, else ``alpha``)."""
    log_c = math.log(s.shape[-1]) + 1.0
    xs = float(np.max(np.abs(s[np.isfinite(s)]), initial=0.0))
    xt = float(np.max(np.abs(t[np.isfinite(t)]), initial=0.0))
    div_weight = alpha * (temperature**2 if t2_scale else 1.0)
    return div_weight * ((xs + xt) / temperature + log_c) + (1.0 - alpha) * (xs + log_c)


def _grad_magnitude(s: Array, temperature: float, alpha: float, t2_scale: bool) -> float:
    """The README's size of a gradient element's terms: ``(max(w/T, alpha) + 1 - alpha) *
    (max|s| + ln C + 1)``, ``w`` the divergence's weight."""
    log_c = math.log(s.shape[-1]) + 1.0
    xs = float(np.max(np.abs(s[np.isfinite(s)]), initial=0.0))
    w = alpha * (temperature**2 if t2_scale else 1.0)
    return (max(w / temperature, alpha) + 1.0 - alpha) * (xs + log_c)


def _close(actual: Any, expected: Any, dtype: npt.DTypeLike, atol: float) -> None:
    rtol, _ = TOLERANCES[np.dtype(dtype)]
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), type(actual)
        assert actual.shape == expected.shape
        if expected.dtype == np.bool_:
            assert actual.dtype == np.bool_
            np.testing.assert_array_equal(actual, expected)
            return
        assert actual.dtype == np.dtype(dtype)
    else:
        assert type(actual) is type(expected), (type(actual), type(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _check(
    got: tuple[kdloss.Components, Array],
    want: tuple[kdloss.Components, Array],
    dtype: npt.DTypeLike,
    magnitude: tuple[float, float],
    rows: int,
    divisor: float,
) -> None:
    """Every field of the components, and the gradient, within ``dtype``'s tolerance of the
    terms' sizes ``(loss, gradient element)`` (``rows`` terms summed, divided by
    ``divisor``)."""
    _, factor = TOLERANCES[np.dtype(dtype)]
    (parts, grad), (want_parts, want_grad) = got, want
    assert isinstance(parts, kdloss.Components)
    atol = factor * magnitude[0] * max(rows, 1) / divisor
    for field in kdloss.Components._fields:
        _close(getattr(parts, field), getattr(want_parts, field), dtype, atol)
    _close(grad, want_grad, dtype, factor * magnitude[1] / divisor)


def _inputs(
    dtype: npt.DTypeLike, shape: tuple[int, ...] = (5, 7, 33), seed: int = 0
) -> tuple[Array, Array, Array, Array]:
    rng = np.random.default_rng(seed)
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y = labels(rng, shape[:-1], shape[-1])
    mask = rng.random(shape[:-1]) < 0.7
    return s, t, y, mask


def _divisor(reduction: str, mask: Array, y: Array | None) -> float:
    counted = mask if y is None else mask & (y != IGNORE)
    return max(float(np.count_nonzero(counted)), 1.0) if reduction == "mean" else 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("t2_scale", [True, False])
@pytest.mark.parametrize("divergence", kdloss.DIVERGENCES)
def test_options_and_mask_match_the_reference(
    dtype: npt.DTypeLike, reduction: str, alpha: float, t2_scale: bool, divergence: str
) -> None:
    s, t, y, mask = _inputs(dtype)
    for temperature in (0.7, 2.0):
        options: dict[str, Any] = dict(
            temperature=temperature,
            alpha=alpha,
            divergence=divergence,
            t2_scale=t2_scale,
            reduction=reduction,
        )
        got = kdloss.distillation_loss_and_grad(
            s, t, y, mask=mask, return_components=True, **options
        )
        want = reference.distillation_loss_and_grad(
            s, t, y, mask=mask, return_components=True, **options
        )
        magnitude = (
            _magnitude(s, t, temperature, alpha, t2_scale),
            _grad_magnitude(s, temperature, alpha, t2_scale),
        )
        _check(got, want, dtype, magnitude, s[..., 0].size, _divisor(reduction, mask, y))
        # The loss alone is the components' loss, and the module computes the same.
        kd = kdloss.DistillationLoss(**options)
        loss = kd(s, t, y, mask=mask)
        np.testing.assert_array_equal(loss, kdloss.distillation_loss(s, t, y, mask=mask, **options))
        np.testing.assert_array_equal(loss, got[0].loss)
        np.testing.assert_array_equal(kd.forward_backward(s, t, y, mask=mask)[1], got[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("normalizer", [7.0, 250, (3, 40.5), [0.25, 2.0]])
@pytest.mark.parametrize("divergence", kdloss.DIVERGENCES)
def test_normalizer_matches_the_reference(
    dtype: npt.DTypeLike, reduction: str, normalizer: Any, divergence: str
) -> None:
    s, t, y, mask = _inputs(dtype, seed=1)
    options: dict[str, Any] = dict(
        temperature=2.0, alpha=0.4, divergence=divergence, reduction=reduction
    )
    got = kdloss.distillation_loss_and_grad(
        s, t, y, mask=mask, normalizer=normalizer, return_components=True, **options
    )
    want = reference.distillation_loss_and_grad(
        s, t, y, mask=mask, normalizer=normalizer, return_components=True, **options
    )
    smallest = min(normalizer) if isinstance(normalizer, (tuple, list)) else normalizer
    magnitude = (_magnitude(s, t, 2.0, 0.4, True), _grad_magnitude(s, 2.0, 0.4, True))
    _check(got, want, dtype, magnitude, s[..., 0].size, smallest)
    # "mean" and "sum" divide the same sums by the normaliser.
    other = "sum" if reduction == "mean" else "mean"
    same = kdloss.distillation_loss(
        s, t, y, mask=mask, normalizer=normalizer, **{**options, "reduction": other}
    )
    assert same == got[0].loss


@pytest.mark.parametrize("divergence", kdloss.DIVERGENCES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_micro_batches_with_the_full_batch_normalizer_add_up_to_the_full_batch(
    divergence: str, alpha: float
) -> None:
    s, t, y, mask = _inputs(np.float64, shape=(24, 50), seed=2)
    kd = kdloss.DistillationLoss(2.0, alpha, divergence=divergence)
    full, full_grad = kd.forward_backward(s, t, y, mask=mask, return_components=True)
    assert isinstance(full.count, int)
    assert isinstance(full.weight_sum, float)
    # What a training loop gathers over its micro-batches first: counted rows and weights.
    parts = [
        kd(s[i::4], t[i::4], y[i::4], mask=mask[i::4], return_components=True) for i in range(4)
    ]
    n_div = sum(p.count for p in parts)
    n_ce = sum(p.weight_sum for p in parts)
    assert (n_div, n_ce) == (full.count, full.weight_sum)
    total, grad = 0.0, np.empty_like(s)
    for i in range(4):
        loss, grad[i::4] = kd.forward_backward(
            s[i::4], t[i::4], y[i::4], mask=mask[i::4], normalizer=(n_div, n_ce)
        )
        total += loss
    np.testing.assert_allclose(total, full.loss, rtol=1e-13)
    np.testing.assert_allclose(grad, full_grad, rtol=1e-13, atol=1e-16)
    # A per-micro-batch mean is what changes with accumulation: it differs.
    per_batch_means = sum(kd(s[i::4], t[i::4], y[i::4], mask=mask[i::4]) for i in range(4)) / 4
    assert not math.isclose(per_batch_means, full.loss, rel_tol=1e-6)


def test_the_mask_alone_selects_rows_without_labels() -> None:
    s, t, _, mask = _inputs(np.float64, seed=3)
    for reduction in ("mean", "sum", "none"):
        got = kdloss.distillation_loss_and_grad(
            s, t, None, alpha=1.0, mask=mask, reduction=reduction, return_components=True
        )
        want = reference.distillation_loss_and_grad(
            s, t, None, alpha=1.0, mask=mask, reduction=reduction, return_components=True
        )
        magnitude = (_magnitude(s, t, 1.0, 1.0, True), _grad_magnitude(s, 1.0, 1.0, True))
        _check(got, want, np.float64, magnitude, mask.size, 1.0)
        # No labels, no label weights.
        assert np.all(np.asarray(got[0].weight_sum) == 0.0)
        assert np.all(got[1][~mask] == 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_counted_is_zero_with_a_zero_gradient(reduction: str) -> None:
    s, t, y, _ = _inputs(np.float32, seed=4)
    mask = np.zeros(y.shape, dtype=bool)
    parts, grad = kdloss.distillation_loss_and_grad(
        s, t, y, mask=mask, reduction=reduction, return_components=True
    )
    assert parts == (0.0, 0.0, 0.0, 0, 0.0)
    assert not np.any(grad)


def test_a_term_that_is_off_is_zero_in_the_components() -> None:
    s, t, y, _ = _inputs(np.float64, seed=5)
    unread = t.copy()
    unread[0, 0, 3] = np.nan  # never read with alpha = 0
    ce_only = kdloss.distillation_loss(s, unread, y, alpha=0.0, return_components=True)
    assert ce_only.divergence == 0.0
    assert ce_only.loss == ce_only.cross_entropy > 0.0
    div_only = kdloss.distillation_loss(s, s + 1e-3 * t, y, alpha=1.0, return_components=True)
    assert div_only.cross_entropy == 0.0
    assert div_only.divergence > 0.0


@pytest.mark.parametrize("divergence", kdloss.DIVERGENCES)
@pytest.mark.parametrize("t2_scale", [True, False])
def test_gradient_is_the_derivative_of_the_loss(divergence: str, t2_scale: bool) -> None:
    """Central differences of the returned loss, with every option that changes the scale."""
    rng = np.random.default_rng(6)
    s, t = logits(rng, (4, 6)), logits(rng, (4, 6))
    y, mask = np.array([0, 5, IGNORE, 2]), np.array([True, False, True, True])
    kd = kdloss.DistillationLoss(1.7, 0.6, divergence=divergence, t2_scale=t2_scale)
    options: dict[str, Any] = dict(mask=mask, normalizer=(2.5, 0.75))
    _, grad = kd.forward_backward(s, t, y, **options)
    h = 1e-6
    numeric = np.zeros_like(s)
    for index in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (kd(up, t, y, **options) - kd(down, t, y, **options)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", kdloss.DIVERGENCES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_divergence_matches_the_reference(dtype: npt.DTypeLike, kind: str, reduction: str) -> None:
    s, t, _, mask = _inputs(dtype, seed=7)
    _, factor = TOLERANCES[np.dtype(dtype)]
    atol = factor * _magnitude(s, t, 0.5, 1.0, False) * mask.size
    for selection in ({}, {"mask": mask}, {"mask": mask, "normalizer": 3.5}):
        if reduction == "none" and "normalizer" in selection:
            continue
        options: dict[str, Any] = dict(kind=kind, temperature=0.5, reduction=reduction)
        got = kdloss.divergence(s, t, **options, **selection)
        want = reference.divergence(s, t, **options, **selection)
        _close(got, want, dtype, atol)
    if kind == "forward_kl":
        np.testing.assert_array_equal(
            kdloss.divergence(s, t, reduction=reduction),
            kdloss.kl_divergence(s, t, reduction=reduction),
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_mask_and_normalizer_match_the_reference(
    dtype: npt.DTypeLike, reduction: str
) -> None:
    s, _, y, mask = _inputs(dtype, seed=8)
    _, factor = TOLERANCES[np.dtype(dtype)]
    atol = factor * _magnitude(s, s, 1.0, 0.0, False) * mask.size
    for selection in ({"mask": mask}, {"mask": mask, "normalizer": 12.0}, {"normalizer": 0.5}):
        if reduction == "none" and "normalizer" in selection:
            continue
        got = kdloss.cross_entropy(s, y, reduction=reduction, **selection)
        want = reference.cross_entropy(s, y, reduction=reduction, **selection)
        _close(got, want, dtype, atol)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(1, 40),
    temperature=st.floats(0.25, 8.0),
    scale=st.floats(0.0, 30.0),
)
def test_divergences_are_nonnegative_zero_at_equality_and_their_gradients_sum_to_zero(
    seed: int, classes: int, temperature: float, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    s, t = logits(rng, (6, classes), scale=scale), logits(rng, (6, classes), scale=scale)
    for kind in kdloss.DIVERGENCES:
        rows = kdloss.divergence(s, t, kind=kind, temperature=temperature, reduction="none")
        magnitude = _magnitude(s, t, temperature, 1.0, False)
        assert np.all(rows >= -1e-12 * magnitude), (kind, rows)
        same = kdloss.divergence(s, s, kind=kind, temperature=temperature, reduction="none")
        assert np.all(np.abs(same) <= 1e-12 * magnitude)
        kd = kdloss.DistillationLoss(temperature, 1.0, divergence=kind, reduction="sum")
        _, grad = kd.forward_backward(s, t)
        np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-12 * magnitude)


def test_settings_are_attributes_part_of_equality_repr_and_pickle() -> None:
    kd = kdloss.DistillationLoss(
        3.0, 0.25, divergence="reverse_kl", beta=0.2, skew=0.3, t2_scale=False, reduction="sum"
    )
    assert (kd.divergence, kd.beta, kd.skew, kd.t2_scale) == ("reverse_kl", 0.2, 0.3, False)
    assert repr(kd) == (
        "DistillationLoss(temperature=3.0, alpha=0.25, divergence='reverse_kl', beta=0.2, "
        "skew=0.3, t2_scale=False, class_weight=None, label_smoothing=0.0, reduction='sum', "
        "ignore_index=-100)"
    )
    assert eval(repr(kd), {"DistillationLoss": kdloss.DistillationLoss}) == kd
    assert pickle.loads(pickle.dumps(kd)) == kd
    assert hash(pickle.loads(pickle.dumps(kd))) == hash(kd)
    for change in ({"divergence": "forward_kl"}, {"beta": 0.5}, {"skew": 0.1}, {"t2_scale": True}):
        options: dict[str, Any] = dict(
            divergence="reverse_kl", beta=0.2, skew=0.3, t2_scale=False, reduction="sum"
        )
        assert kdloss.DistillationLoss(3.0, 0.25, **{**options, **change}) != kd
    default = kdloss.DistillationLoss()
    assert (default.divergence, default.beta, default.skew, default.t2_scale) == (
        "forward_kl",
        0.5,
        0.1,
        True,
    )
    for attribute in ("divergence", "beta", "skew", "t2_scale"):
        with pytest.raises(AttributeError):
            setattr(kd, attribute, getattr(default, attribute))


def test_a_loss_pickled_before_its_divergence_option_still_loads() -> None:
    from kdloss.loss import _restore

    assert _restore(2.0, 0.3, "sum", 7) == kdloss.DistillationLoss(
        2.0, 0.3, reduction="sum", ignore_index=7
    )


def test_t2_scale_multiplies_the_divergence_term_only() -> None:
    s, t, y, _ = _inputs(np.float64, seed=9)
    with_t2 = kdloss.distillation_loss(s, t, y, temperature=3.0, return_components=True)
    without = kdloss.distillation_loss(
        s, t, y, temperature=3.0, t2_scale=False, return_components=True
    )
    assert with_t2[1:] == without[1:]
    np.testing.assert_allclose(with_t2.loss, 0.5 * 9.0 * with_t2.divergence + 0.5 * with_t2[2])
    np.testing.assert_allclose(without.loss, 0.5 * without.divergence + 0.5 * without[2])


BAD_OPTIONS = [
    ({"divergence": "kl"}, ValueError, "divergence must be one of 'forward_kl', 'reverse_kl'"),
    ({"divergence": 1}, TypeError, "divergence must be a str"),
    ({"beta": 1.5}, ValueError, r"beta must be in \[0, 1\], got 1.5"),
    ({"beta": math.nan}, ValueError, r"beta must be in \[0, 1\], got NaN"),
    ({"beta": "0.5"}, TypeError, "beta must be a real number"),
    ({"skew": -0.1}, ValueError, r"skew must be in \[0, 1\], got -0.1"),
    ({"skew": None}, TypeError, "skew must be a real number"),
    ({"t2_scale": 1}, TypeError, "t2_scale must be a bool"),
    ({"t2_scale": "yes"}, TypeError, "t2_scale must be a bool"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    s, t, y, _ = _inputs(np.float32, seed=10)
    with pytest.raises(error, match=message):
        kdloss.DistillationLoss(**options)
    with pytest.raises(error, match=message):
        kdloss.distillation_loss(s, t, y, **options)
    with pytest.raises(error, match=message):
        kdloss.distillation_loss_and_grad(s, t, y, **options)


BAD_CALLS = [
    (
        {"mask": np.ones((5, 7), dtype=np.int8)},
        TypeError,
        "mask must be a boolean array, got dtype int8",
    ),
    ({"mask": np.ones((5, 6), dtype=bool)}, ValueError, r"mask must have shape \(5, 7\) \(logits"),
    ({"mask": np.ones(35, dtype=bool)}, ValueError, r"mask must have shape \(5, 7\)"),
    ({"mask": [[True] * 7] * 5 + [[False] * 7]}, ValueError, r"mask must have shape \(5, 7\)"),
    ({"mask": np.ma.masked_array(np.ones((5, 7), bool))}, TypeError, "mask is a masked array"),
    ({"normalizer": 0}, ValueError, "normalizer must be a finite number > 0, got 0"),
    ({"normalizer": -2.5}, ValueError, "normalizer must be a finite number > 0, got -2.5"),
    ({"normalizer": math.inf}, ValueError, "normalizer must be a finite number > 0, got inf"),
    ({"normalizer": math.nan}, ValueError, "normalizer must be a finite number > 0, got NaN"),
    ({"normalizer": "4"}, TypeError, "normalizer must be a real number"),
    ({"normalizer": True}, TypeError, "normalizer must be a real number"),
    ({"normalizer": (1.0, 0.0)}, ValueError, r"normalizer\[1\] must be a finite number > 0"),
    ({"normalizer": (-1.0, 1.0)}, ValueError, r"normalizer\[0\] must be a finite number > 0"),
    ({"normalizer": (1.0, "2")}, TypeError, r"normalizer\[1\] must be a real number"),
    ({"normalizer": (1.0, 2.0, 3.0)}, ValueError, r"a pair \(n_div, n_ce\), got 3 values"),
    ({"normalizer": 4.0, "reduction": "none"}, ValueError, "normalizer must be None with"),
    ({"return_components": 1}, TypeError, "return_components must be a bool"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_CALLS)
def test_bad_selections_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    s, t, y, _ = _inputs(np.float32, shape=(5, 7, 9), seed=11)
    reduction = options.pop("reduction", "mean")
    kd = kdloss.DistillationLoss(reduction=reduction)
    with pytest.raises(error, match=message):
        kd(s, t, y, **options)
    with pytest.raises(error, match=message):
        kd.forward_backward(s, t, y, **options)
    with pytest.raises(error, match=message):
        kdloss.distillation_loss(s, t, y, reduction=reduction, **options)
    if "return_components" in options or isinstance(options.get("normalizer"), tuple):
        return
    with pytest.raises(error, match=message):
        kdloss.divergence(s, t, reduction=reduction, **options)
    with pytest.raises(error, match=message):
        kdloss.cross_entropy(s, y, reduction=reduction, **options)


@pytest.mark.parametrize("function", ["divergence", "cross_entropy"])
def test_a_pair_normalizer_is_only_for_the_distillation_loss(function: str) -> None:
    s, t, y, _ = _inputs(np.float32, seed=12)
    call = {
        "divergence": lambda: kdloss.divergence(s, t, normalizer=(1.0, 2.0)),
        "cross_entropy": lambda: kdloss.cross_entropy(s, y, normalizer=(1.0, 2.0)),
    }[function]
    with pytest.raises(TypeError, match="normalizer must be a real number here"):
        call()


def test_divergence_checks_its_options_by_name() -> None:
    s, t, _, _ = _inputs(np.float32, seed=13)
    with pytest.raises(ValueError, match="kind must be one of 'forward_kl', 'reverse_kl'"):
        kdloss.divergence(s, t, kind="js")
    with pytest.raises(TypeError, match="kind must be a str"):
        kdloss.divergence(s, t, kind=None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        kdloss.divergence(s, t, beta=2.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        kdloss.divergence(s, t, temperature=0.0)


def _class_weight(classes: int, seed: int) -> Array:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 3.0, classes)
    w[1] = 0.0  # a class that does not count in the cross-entropy
    return w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(6, 7, 33), (40, 5)])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_class_weights_and_label_smoothing_match_the_reference(
    dtype: npt.DTypeLike,
    reduction: str,
    alpha: float,
    shape: tuple[int, ...],
    weighted: bool,
    label_smoothing: float,
) -> None:
    s, t, y, mask = _inputs(dtype, shape=shape, seed=14)
    w = _class_weight(shape[-1], 14) if weighted else np.ones(shape[-1])
    options: dict[str, Any] = dict(
        temperature=2.0,
        alpha=alpha,
        class_weight=w if weighted else None,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    got = kdloss.distillation_loss_and_grad(s, t, y, mask=mask, return_components=True, **options)
    want = reference.distillation_loss_and_grad(
        s, t, y, mask=mask, return_components=True, **options
    )
    # "mean" divides the cross-entropy by the counted rows' weights: the smallest divisor.
    counted = mask & (y != IGNORE)
    divisor = 1.0
    if reduction == "mean":
        divisor = min(float(np.count_nonzero(counted)), float(w[y[counted]].sum()))
    magnitude = (
        3.0 * _magnitude(s, t, 2.0, alpha, True),
        3.0 * _grad_magnitude(s, 2.0, alpha, True),
    )
    _check(got, want, dtype, magnitude, mask.size, divisor)
    if alpha == 0.0:
        ce = kdloss.cross_entropy(
            s,
            y,
            class_weight=options["class_weight"],
            label_smoothing=label_smoothing,
            mask=mask,
            reduction=reduction,
        )
        np.testing.assert_array_equal(ce, got[0].cross_entropy)


def test_a_class_of_weight_zero_costs_nothing_even_at_infinite_cross_entropy() -> None:
    s = np.array([[0.0, -np.inf, 1.0], [2.0, 0.0, -1.0]])
    y = np.array([1, 0])
    w = np.array([1.0, 0.0, 2.0])
    parts, grad = kdloss.distillation_loss_and_grad(
        s, s, y, alpha=0.0, class_weight=w, reduction="sum", return_components=True
    )
    want = reference.cross_entropy(s, y, class_weight=w, reduction="sum")
    assert (
        parts.cross_entropy == want == pytest.approx(-np.log(np.exp(2) / np.exp([2, 0, -1]).sum()))
    )
    assert parts.weight_sum == 1.0
    assert np.all(np.isfinite(grad))
    assert not np.any(grad[0])
    # Without the weight the same row's cross-entropy is +inf, as the mathematics says.
    assert kdloss.cross_entropy(s, y, reduction="sum") == np.inf


def test_micro_batches_add_up_with_class_weights() -> None:
    s, t, y, mask = _inputs(np.float64, shape=(24, 50), seed=15)
    kd = kdloss.DistillationLoss(2.0, 0.4, class_weight=_class_weight(50, 15))
    full, full_grad = kd.forward_backward(s, t, y, mask=mask, return_components=True)
    parts = [
        kd(s[i::3], t[i::3], y[i::3], mask=mask[i::3], return_components=True) for i in range(3)
    ]
    normalizer = (sum(p.count for p in parts), sum(p.weight_sum for p in parts))
    assert normalizer[1] == pytest.approx(full.weight_sum, rel=1e-15)
    total, grad = 0.0, np.empty_like(s)
    for i in range(3):
        loss, grad[i::3] = kd.forward_backward(
            s[i::3], t[i::3], y[i::3], mask=mask[i::3], normalizer=normalizer
        )
        total += loss
    np.testing.assert_allclose(total, full.loss, rtol=1e-13)
    np.testing.assert_allclose(grad, full_grad, rtol=1e-12, atol=1e-16)


def test_class_weights_are_copied_read_only_and_part_of_the_settings() -> None:
    w = np.array([1.0, 2.0, 0.5])
    kd = kdloss.DistillationLoss(class_weight=w)
    s, y = np.array([[0.1, 0.2, 0.3]]), np.array([1])
    before = kd(s, s, y)
    w[1] = 100.0  # the caller's array changes; the loss does not
    assert kd(s, s, y) == before
    assert kd.class_weight is not None
    np.testing.assert_array_equal(kd.class_weight, [1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="read-only"):
        kd.class_weight[0] = 3.0
    assert kd == kdloss.DistillationLoss(class_weight=[1, 2, 0.5])
    assert kd != kdloss.DistillationLoss(class_weight=[1, 2, 0.25])
    assert kd != kdloss.DistillationLoss()
    assert pickle.loads(pickle.dumps(kd)) == kd
    assert eval(repr(kd), {"DistillationLoss": kdloss.DistillationLoss}) == kd
    assert "class_weight=<100 class weights>" in repr(
        kdloss.DistillationLoss(class_weight=np.ones(100))
    )


BAD_WEIGHTS = [
    ([1.0, -0.5, 1.0], ValueError, "class_weight must hold finite numbers >= 0, got -0.5"),
    ([1.0, np.nan, 1.0], ValueError, "class_weight must hold finite numbers >= 0, got NaN"),
    ([1.0, np.inf, 1.0], ValueError, "class_weight must hold finite numbers >= 0, got inf"),
    ([[1.0, 1.0, 1.0]], ValueError, r"class_weight must be 1-D \(one weight per class\)"),
    (["a", "b", "c"], TypeError, "class_weight must hold real numbers"),
    ([1 + 1j, 1, 1], TypeError, "class_weight must hold real numbers"),
]


@pytest.mark.parametrize(("weights", "error", "message"), BAD_WEIGHTS)
def test_bad_class_weights_are_refused_by_name(
    weights: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        kdloss.DistillationLoss(class_weight=weights)
    s, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(error, match=message):
        kdloss.distillation_loss(s, s, y, class_weight=weights)
    with pytest.raises(error, match=message):
        kdloss.cross_entropy(s, y, class_weight=weights)


def test_class_weights_of_the_wrong_length_are_refused_at_the_call() -> None:
    kd = kdloss.DistillationLoss(class_weight=[1.0, 2.0])
    s, y = np.zeros((2, 3)), np.array([0, 1])
    message = r"class_weight must have one entry per class \(3\), got 2"
    with pytest.raises(ValueError, match=message):
        kd(s, s, y)
    with pytest.raises(ValueError, match=message):
        kdloss.cross_entropy(s, y, class_weight=[1.0, 2.0])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("classes", [6, 30])
def test_smoothed_weighted_gradient_is_the_derivative_of_the_loss(
    label_smoothing: float, classes: int
) -> None:
    rng = np.random.default_rng(16)
    s, t = logits(rng, (5, classes)), logits(rng, (5, classes))
    y, mask = np.array([0, 5, IGNORE, 2, 1]), np.array([True, False, True, True, True])
    kd = kdloss.DistillationLoss(
        1.5,
        0.3,
        divergence="reverse_kl",
        class_weight=_class_weight(classes, 16),
        label_smoothing=label_smoothing,
    )
    _, grad = kd.forward_backward(s, t, y, mask=mask)
    h = 1e-6
    numeric = np.zeros_like(s)
    for index in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (kd(up, t, y, mask=mask) - kd(down, t, y, mask=mask)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_smoothing_with_a_masked_student_class_is_infinite_unless_its_weight_is_zero() -> None:
    """PyTorch's smoothing term is +inf for a student class at -inf, and NaN (0 * inf) when
    that class weighs 0; kdloss gives +inf and a finite value."""
    s = np.array([[1.0, -np.inf, 0.5, 2.0], [0.0, -np.inf, 1.0, 1.0]])
    y = np.array([0, 3])
    for small in (s, np.tile(s, (1, 10))):  # the short-row and the long-row driver
        labels = y
        assert kdloss.cross_entropy(small, labels, label_smoothing=0.1) == np.inf
        w = np.ones(small.shape[-1])
        w[1::4] = 0.0
        got = kdloss.cross_entropy(small, labels, label_smoothing=0.1, class_weight=w)
        want = reference.cross_entropy(small, labels, label_smoothing=0.1, class_weight=w)
        assert math.isfinite(got)
        assert got == pytest.approx(want, rel=1e-14)
        _, grad = kdloss.distillation_loss_and_grad(
            small, small, labels, alpha=0.0, label_smoothing=0.1, class_weight=w
        )
        _, want_grad = reference.distillation_loss_and_grad(
            small, small, labels, alpha=0.0, label_smoothing=0.1, class_weight=w
        )
        np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (1.5, ValueError, r"label_smoothing must be in \[0, 1\], got 1.5"),
        (-0.1, ValueError, r"label_smoothing must be in \[0, 1\], got -0.1"),
        (math.nan, ValueError, r"label_smoothing must be in \[0, 1\], got NaN"),
        ("0.1", TypeError, "label_smoothing must be a real number"),
    ],
)
def test_bad_label_smoothing_is_refused_by_name(
    value: Any, error: type[Exception], message: str
) -> None:
    s, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(error, match=message):
        kdloss.DistillationLoss(label_smoothing=value)
    with pytest.raises(error, match=message):
        kdloss.distillation_loss(s, s, y, label_smoothing=value)
    with pytest.raises(error, match=message):
        kdloss.cross_entropy(s, y, label_smoothing=value)


def test_label_smoothing_is_an_attribute_part_of_equality_repr_and_pickle() -> None:
    kd = kdloss.DistillationLoss(label_smoothing=0.25)
    assert kd.label_smoothing == 0.25
    assert "label_smoothing=0.25" in repr(kd)
    assert kd != kdloss.DistillationLoss()
    assert pickle.loads(pickle.dumps(kd)) == kd
    assert eval(repr(kd), {"DistillationLoss": kdloss.DistillationLoss}) == kd
    with pytest.raises(AttributeError):
        kd.label_smoothing = 0.0  # type: ignore[misc]
