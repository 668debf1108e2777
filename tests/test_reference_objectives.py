"""The float64 reference's objectives (issue #10): every divergence and option.

The reference is the oracle the native kernels are tested against, so it is checked here on its
own terms: its closed-form gradients against central finite differences of its own loss, the
divergences' mathematical properties, the ends of ``beta`` and ``skew``, rows that underflow,
masked classes, batches where nothing counts, gradient accumulation, and the option checks.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kdloss import Components, reference

IGNORE = -100
DIVERGENCES = reference.DIVERGENCES
# (divergence, beta, skew): every divergence, with beta and skew inside (0, 1) and at the ends.
SETTINGS = [
    ("forward_kl", 0.5, 0.1),
    ("reverse_kl", 0.5, 0.1),
    ("jsd", 0.5, 0.1),
    ("jsd", 0.1, 0.1),
    ("jsd", 0.9, 0.1),
    ("jsd", 0.0, 0.1),
    ("jsd", 1.0, 0.1),
    ("tvd", 0.5, 0.1),
    ("skew_kl", 0.5, 0.1),
    ("skew_kl", 0.5, 0.7),
    ("skew_kl", 0.5, 0.0),
    ("skew_kl", 0.5, 1.0),
    ("skew_reverse_kl", 0.5, 0.1),
    ("skew_reverse_kl", 0.5, 0.7),
    ("skew_reverse_kl", 0.5, 0.0),
    ("skew_reverse_kl", 0.5, 1.0),
]
SETTING_IDS = [f"{k}-b{b}-s{s}" for k, b, s in SETTINGS]

SHAPE = (2, 3, 5)
WEIGHTS = np.array([0.5, 2.0, 1.0, 0.0, 3.0])
MASK = np.array([[True, False, True], [True, True, False]])
# Options of the distillation loss, each set a case of the finite-difference test.
OPTIONS: list[dict[str, Any]] = [
    {},
    {"temperature": 2.0},
    {"temperature": 0.5, "t2_scale": False},
    {"alpha": 0.0, "label_smoothing": 0.2, "class_weight": WEIGHTS},
    {"alpha": 1.0, "temperature": 3.0},
    {"alpha": 0.3, "label_smoothing": 0.1, "class_weight": WEIGHTS, "reduction": "sum"},
    {"alpha": 0.7, "reduction": "none", "mask": MASK, "label_smoothing": 0.4},
    {"normalizer": 7.0, "temperature": 1.5},
    {"normalizer": (5.0, 3.5), "class_weight": WEIGHTS, "label_smoothing": 0.3},
    {"mask": MASK, "class_weight": WEIGHTS, "temperature": 3.0, "t2_scale": False},
    {"label_smoothing": 1.0, "alpha": 0.2, "class_weight": WEIGHTS},
]


def _inputs(
    seed: int = 0, shape: tuple[int, ...] = SHAPE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(shape) * 2.0
    t = rng.standard_normal(shape) * 2.0
    y = rng.integers(0, shape[-1], size=shape[:-1])
    y.flat[1] = IGNORE
    return s, t, y


def _central_differences(
    f: Callable[[npt.NDArray[np.float64]], object], x: npt.NDArray[np.float64], h: float = 1e-5
) -> npt.NDArray[np.float64]:
    """d(sum of f)/dx by central differences; for per-row losses, the sum over rows has row
    ``i``'s gradient in row ``i``, which is what the reference returns under ``"none"``."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (np.sum(f(up)) - np.sum(f(down))) / (2.0 * h)
    return grad


def _assert_fd(
    f: Callable[[npt.NDArray[np.float64]], object],
    grad: npt.NDArray[np.float64],
    x: npt.NDArray[np.float64],
    h: float = 1e-5,
) -> None:
    want = _central_differences(f, x, h)
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7 * scale)


# --- gradients against finite differences ----------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS, ids=[str(i) for i in range(len(OPTIONS))])
@pytest.mark.parametrize(("kind", "beta", "skew"), SETTINGS, ids=SETTING_IDS)
def test_distillation_gradient_is_the_derivative_of_the_loss(
    kind: str, beta: float, skew: float, options: dict[str, Any]
) -> None:
    s, t, y = _inputs()
    kwargs = {"divergence": kind, "beta": beta, "skew": skew, **options}
    _loss, grad = reference.distillation_loss_and_grad(s, t, y, **kwargs)
    assert np.all(np.isfinite(grad))
    _assert_fd(lambda x: reference.distillation_loss(x, t, y, **kwargs), grad, s)
    if options.get("reduction") == "none" or "mask" in options:
        counted = (y != IGNORE) & options.get("mask", True)
        assert not np.any(grad[~counted]), "a row that does not count has a gradient"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("kind", "beta", "skew"), SETTINGS, ids=SETTING_IDS)
def test_divergence_gradient_is_the_derivative_of_the_divergence(
    kind: str, beta: float, skew: float, reduction: str
) -> None:
    s, t, _ = _inputs(1)
    kwargs: dict[str, Any] = {
        "kind": kind,
        "beta": beta,
        "skew": skew,
        "temperature": 1.7,
        "reduction": reduction,
        "mask": MASK,
    }
    if reduction == "sum":
        kwargs["normalizer"] = 2.5
    value, grad = reference.divergence_and_grad(s, t, **kwargs)
    _assert_fd(lambda x: reference.divergence(x, t, **kwargs), grad, s)
    assert not np.any(grad[~MASK])
    # The divergence is distillation_loss's term at alpha = 1 without T**2.
    same = reference.distillation_loss_and_grad(
        s, t, None, alpha=1.0, t2_scale=False, divergence=kind, **_without(kwargs, "kind")
    )
    np.testing.assert_array_equal(same[0], value)
    np.testing.assert_array_equal(same[1], grad)


def _without(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != key}


def test_tvd_gradient_at_ties_is_the_central_difference() -> None:
    """Where ``p == q`` exactly, ``|p - q|`` contributes the subgradient 0, which is what a
    central difference sees; the logits' gradient there is still non-zero, through the
    softmax."""
    s = np.array([[0.0, 1.0, 2.0, 3.0]])
    t = np.array([[0.0, 2.0, 1.0, 3.0]])
    p, q = reference.softmax(t), reference.softmax(s)
    assert p[0, 0] == q[0, 0], "the construction must tie exactly"
    assert p[0, 3] == q[0, 3]
    _, grad = reference.divergence_and_grad(s, t, kind="tvd")
    # At a tie the central difference of |q - p| errs by O(h), not O(h**2): a smaller step.
    _assert_fd(lambda x: reference.divergence(x, t, kind="tvd"), grad, s, h=1e-8)
    assert grad[0, 0] != 0.0
    assert grad[0, 3] != 0.0


# --- properties -------------------------------------------------------------------------------

ROWS = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(1, 6)),
    elements=st.floats(-20.0, 20.0),
)
PAIRS = ROWS.flatmap(
    lambda s: st.tuples(
        st.just(s), hnp.arrays(np.float64, s.shape, elements=st.floats(-20.0, 20.0))
    )
)
TEMPERATURES = st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0])
FRACTIONS = st.one_of(
    st.sampled_from([0.0, 1.0, 1e-9, 1.0 - 1e-9, 0.5]), st.floats(0.0, 1.0, allow_nan=False)
)


def _binary_entropy(beta: float) -> float:
    return -sum(x * math.log(x) for x in (beta, 1.0 - beta) if x > 0.0)


def _tolerance(s: npt.NDArray[np.float64], t: npt.NDArray[np.float64], temperature: float) -> float:
    """Rounding in a divergence is relative to its terms, the log-probabilities."""
    return 1e-13 * (float(np.max(np.abs(s)) + np.max(np.abs(t))) / temperature + s.shape[-1])


@given(PAIRS, TEMPERATURES, st.sampled_from(DIVERGENCES), FRACTIONS, FRACTIONS)
def test_divergence_properties(
    pair: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    temperature: float,
    kind: str,
    beta: float,
    skew: float,
) -> None:
    """Non-negative; JSD below its bound; TVD at most 1; skewed KLs at most -log(skew); each
    row's gradient sums to 0 (the softmax's Jacobian annihilates constants)."""
    s, t = pair
    options = {"kind": kind, "temperature": temperature, "beta": beta, "skew": skew}
    rows, grad = reference.divergence_and_grad(s, t, reduction="none", **options)
    tol = _tolerance(s, t, temperature)
    assert isinstance(rows, np.ndarray)
    assert np.all(rows >= -tol), rows
    # m >= beta p gives KL(p || m) <= -log(beta), m >= (1 - beta) q gives KL(q || m) <=
    # -log(1 - beta): beta-JSD <= -beta log(beta) - (1 - beta) log(1 - beta) <= log 2.
    if kind == "jsd" and 0.0 < beta < 1.0:
        assert np.all(rows <= _binary_entropy(beta) + tol)
    if kind == "tvd":
        assert np.all(rows <= 1.0 + tol)
    if kind in ("skew_kl", "skew_reverse_kl") and skew > 0.0:
        assert np.all(rows <= -math.log(skew) + tol)
    # sum_j q_j (h_j - sum_i q_i h_i) = (sum_i q_i h_i) (1 - sum q): rounding of the size of h,
    # the log-probabilities' differences.
    row_sums = np.sum(grad, axis=-1)
    np.testing.assert_allclose(row_sums, 0.0, atol=tol * max(1.0, float(np.max(np.abs(grad)))))


@given(ROWS, TEMPERATURES, st.sampled_from(DIVERGENCES), FRACTIONS, FRACTIONS)
def test_divergence_of_identical_inputs_is_zero(
    s: npt.NDArray[np.float64], temperature: float, kind: str, beta: float, skew: float
) -> None:
    options = {"kind": kind, "temperature": temperature, "beta": beta, "skew": skew}
    rows, grad = reference.divergence_and_grad(s, s.copy(), reduction="none", **options)
    np.testing.assert_allclose(rows, 0.0, atol=_tolerance(s, s, temperature))
    np.testing.assert_allclose(grad, 0.0, atol=_tolerance(s, s, temperature))


def test_jsd_bound_is_reached_by_disjoint_supports() -> None:
    """The bound tested above is tight: disjoint supports reach the binary entropy."""
    s = np.array([0.0, -np.inf])
    t = np.array([-np.inf, 0.0])
    for beta in (0.1, 0.5, 0.8):
        got = reference.divergence(s, t, kind="jsd", beta=beta)
        assert got == pytest.approx(_binary_entropy(beta), rel=1e-14)


# --- the ends of beta and skew ----------------------------------------------------------------


def _pair_values(
    kind: str, beta: float = 0.5, skew: float = 0.1
) -> tuple[object, npt.NDArray[np.float64]]:
    s, t, _ = _inputs(3)
    return reference.divergence_and_grad(
        s, t, kind=kind, beta=beta, skew=skew, temperature=1.3, reduction="none"
    )


@pytest.mark.parametrize(
    ("kind", "beta", "skew", "plain"),
    [
        ("jsd", 0.0, 0.1, "forward_kl"),
        ("jsd", 1.0, 0.1, "reverse_kl"),
        ("skew_kl", 0.5, 0.0, "forward_kl"),
        ("skew_reverse_kl", 0.5, 0.0, "reverse_kl"),
    ],
)
def test_ends_are_the_plain_divergences(kind: str, beta: float, skew: float, plain: str) -> None:
    """beta = 0 is forward KL and beta = 1 reverse KL exactly (TRL's generalized_jsd_loss and
    Liger's convention); a skew of 0 makes the skewed KLs the plain ones."""
    value, grad = _pair_values(kind, beta, skew)
    want_value, want_grad = _pair_values(plain)
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grad, want_grad)


def test_jsd_tends_to_zero_at_the_ends_so_the_value_jumps() -> None:
    """JSD_beta = beta KL(p || q) + O(beta**2) as beta -> 0, and (1 - beta) KL(q || p) +
    O((1 - beta)**2) as beta -> 1: continuous at neither end of the convention."""
    forward, _ = _pair_values("forward_kl")
    reverse, _ = _pair_values("reverse_kl")
    for small in (1e-4, 1e-6, 1e-9):
        near_0, _ = _pair_values("jsd", beta=small)
        near_1, _ = _pair_values("jsd", beta=1.0 - small)
        np.testing.assert_allclose(np.asarray(near_0) / small, forward, rtol=200 * small)
        np.testing.assert_allclose(np.asarray(near_1) / small, reverse, rtol=200 * small + 1e-6)
        assert np.all(np.asarray(near_0) < 1e-3 * np.asarray(forward))


@pytest.mark.parametrize(
    ("kind", "plain"), [("skew_kl", "forward_kl"), ("skew_reverse_kl", "reverse_kl")]
)
def test_skew_is_continuous_at_both_ends(kind: str, plain: str) -> None:
    plain_value, plain_grad = _pair_values(plain)
    # The skewed KLs' gradients differ from the plain ones by about skew * max(p / q).
    near_0, grad_0 = _pair_values(kind, skew=1e-9)
    np.testing.assert_allclose(near_0, plain_value, rtol=1e-7)
    np.testing.assert_allclose(grad_0, plain_grad, rtol=1e-6, atol=1e-12)
    at_1, grad_1 = _pair_values(kind, skew=1.0)
    np.testing.assert_allclose(at_1, 0.0, atol=1e-15)
    np.testing.assert_allclose(grad_1, 0.0, atol=1e-15)
    near_1, _ = _pair_values(kind, skew=1.0 - 1e-9)
    assert np.all(np.asarray(near_1) <= 2e-9 * np.asarray(plain_value) + 1e-15)


# --- special values ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_rows_where_both_distributions_underflow(kind: str) -> None:
    """Logits near -1e4 at T = 0.5: exp underflows to 0 in both distributions. Log space keeps
    every term finite; those classes contribute what they are worth (nothing) and the result
    is the one without them."""
    s = np.array([[0.0, -1e4, -1e4 + 1.0, 2.0, 1.0], [-1e4, -1e4 + 2.0, 0.0, -1e4, 3.0]])
    t = np.array([[1.0, -1e4 + 3.0, -1e4, 0.5, 2.0], [-1e4 + 1.0, -1e4, 2.0, -1e4, 1.0]])
    kept = np.array([[0, 3, 4], [2, 4]], dtype=object)
    options: dict[str, Any] = {"kind": kind, "temperature": 0.5, "reduction": "none"}
    rows, grad = reference.divergence_and_grad(s, t, **options)
    assert np.all(np.isfinite(rows))
    assert np.all(np.isfinite(grad))
    for i, cols in enumerate(kept):
        want, want_grad = reference.divergence_and_grad(s[i, cols], t[i, cols], **options)
        assert float(np.asarray(rows)[i]) == pytest.approx(float(np.asarray(want)), rel=1e-12)
        np.testing.assert_allclose(grad[i, cols], want_grad, rtol=1e-12, atol=1e-300)
        others = np.setdiff1d(np.arange(s.shape[1]), cols)
        np.testing.assert_array_equal(grad[i, others], 0.0)
    loss, grad = reference.distillation_loss_and_grad(
        s, t, [3, 4], divergence=kind, temperature=0.5, label_smoothing=0.1
    )
    assert math.isfinite(loss)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_classes_masked_in_both_inputs_are_left_out(kind: str) -> None:
    s, t, _ = _inputs(4, (3, 6))
    masked = [1, 4]
    s_m, t_m = s.copy(), t.copy()
    s_m[:, masked] = -np.inf
    t_m[:, masked] = -np.inf
    keep = [0, 2, 3, 5]
    for options in ({"reduction": "none"}, {"reduction": "sum", "temperature": 2.0}):
        value, grad = reference.divergence_and_grad(s_m, t_m, kind=kind, **options)
        want, want_grad = reference.divergence_and_grad(
            s[:, keep], t[:, keep], kind=kind, **options
        )
        np.testing.assert_allclose(value, want, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grad[:, keep], want_grad, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(grad[:, masked], 0.0)


@pytest.mark.parametrize(
    ("kind", "teacher_masked", "student_masked"),
    [
        ("forward_kl", "finite", "inf"),
        ("reverse_kl", "inf", "finite"),
        ("jsd", "finite", "finite"),
        ("tvd", "finite", "finite"),
        ("skew_kl", "finite", "finite"),
        ("skew_reverse_kl", "finite", "finite"),
    ],
)
def test_a_class_masked_in_one_input(kind: str, teacher_masked: str, student_masked: str) -> None:
    """A class one side gives no mass: +inf only where the divergence really is infinite (the
    other side has mass where the side it is measured against has none)."""
    s, t, _ = _inputs(5, (2, 4))
    t_m = t.copy()
    t_m[:, 2] = -np.inf
    s_m = s.copy()
    s_m[:, 2] = -np.inf
    for student, teacher, want in ((s, t_m, teacher_masked), (s_m, t, student_masked)):
        rows = np.asarray(reference.divergence(student, teacher, kind=kind, reduction="none"))
        assert not np.any(np.isnan(rows))
        if want == "inf":
            assert np.all(rows == np.inf)
        else:
            assert np.all(np.isfinite(rows))
            _, grad = reference.divergence_and_grad(student, teacher, kind=kind)
            assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("how", ["labels", "mask", "weights"])
def test_nothing_counts(kind: str, how: str) -> None:
    """All rows ignored (or masked out): "mean" is 0.0, not NaN, and the gradient is 0; so is
    the cross-entropy's "mean" when the counted rows' weights sum to 0."""
    s, t, y = _inputs(6)
    kwargs: dict[str, Any] = {"divergence": kind, "label_smoothing": 0.2}
    if how == "labels":
        y = np.full_like(y, IGNORE)
    elif how == "mask":
        kwargs["mask"] = np.zeros(y.shape, dtype=bool)
    else:
        kwargs["class_weight"] = np.where(np.arange(SHAPE[-1]) == 0, 1.0, 0.0)
        y = np.where(y == IGNORE, IGNORE, 1 + y % (SHAPE[-1] - 1))
    parts, grad = reference.distillation_loss_and_grad(s, t, y, return_components=True, **kwargs)
    assert isinstance(parts, Components)
    assert parts.cross_entropy == 0.0
    assert type(parts.cross_entropy) is float
    assert parts.weight_sum == 0.0
    if how == "weights":
        assert parts.count > 0
        assert parts.divergence > 0.0
        _, div_grad = reference.distillation_loss_and_grad(s, t, y, alpha=1.0, divergence=kind)
        np.testing.assert_allclose(grad, 0.5 * div_grad, rtol=1e-15)
        return
    assert parts == (0.0, 0.0, 0.0, 0, 0.0)
    assert not np.any(grad)
    assert reference.distillation_loss(s, t, y, reduction="sum", **kwargs) == 0.0
    rows = reference.distillation_loss(s, t, y, reduction="none", **kwargs)
    np.testing.assert_array_equal(rows, np.zeros(y.shape))


def test_cross_entropy_with_masked_student_classes() -> None:
    """With smoothing, a student -inf class of positive weight makes the row's CE +inf (as in
    PyTorch); one of weight 0 contributes 0 (PyTorch: NaN from 0 * inf). The gradient is the
    closed form, finite."""
    s = np.array([[1.0, -np.inf, 0.5, 2.0]])
    y = np.array([0])
    weights = np.array([1.0, 0.0, 2.0, 1.0])
    finite = reference.cross_entropy(s, y, label_smoothing=0.1, class_weight=weights)
    assert math.isfinite(finite)
    keep = [0, 2, 3]
    want = 0.9 * -reference.log_softmax(s)[0, 0] + 0.1 / 4 * -np.sum(
        weights[keep] * reference.log_softmax(s)[0, keep]
    )
    assert finite == pytest.approx(want, rel=1e-14)
    assert reference.cross_entropy(s, y, label_smoothing=0.1) == np.inf
    assert reference.cross_entropy(s, y) == pytest.approx(-reference.log_softmax(s)[0, 0])
    _, grad = reference.distillation_loss_and_grad(
        s, s, y, alpha=0.0, label_smoothing=0.1, class_weight=weights
    )
    assert np.all(np.isfinite(grad))


def test_a_term_of_weight_zero_is_not_computed() -> None:
    """alpha = 0: the teacher is not used (NaN there changes nothing); alpha = 1: the CE is not
    computed (an infinite one changes nothing) and its component is 0.0."""
    s, t, y = _inputs(7)
    nan_teacher = np.full_like(t, np.nan)
    for kind in DIVERGENCES:
        parts, grad = reference.distillation_loss_and_grad(
            s, nan_teacher, y, alpha=0.0, divergence=kind, return_components=True
        )
        assert parts.divergence == 0.0
        assert parts.loss == parts.cross_entropy == reference.cross_entropy(s, y)
        assert np.all(np.isfinite(grad))
    s_inf = s.copy()
    s_inf[..., 0] = -np.inf
    parts, grad = reference.distillation_loss_and_grad(
        s_inf, t, y, alpha=1.0, label_smoothing=0.5, divergence="reverse_kl", return_components=True
    )
    assert parts.cross_entropy == 0.0
    assert math.isfinite(parts.loss)
    assert np.all(np.isfinite(grad))


# --- components, reductions, normalizers ----------------------------------------------------


@pytest.mark.parametrize(("kind", "beta", "skew"), SETTINGS[::3], ids=SETTING_IDS[::3])
def test_components_make_up_the_loss(kind: str, beta: float, skew: float) -> None:
    s, t, y = _inputs(8)
    kwargs: dict[str, Any] = {
        "divergence": kind,
        "beta": beta,
        "skew": skew,
        "temperature": 2.0,
        "alpha": 0.3,
        "label_smoothing": 0.1,
        "class_weight": WEIGHTS,
        "mask": MASK,
    }
    counted = (y != IGNORE) & MASK
    label_w = np.where(counted, WEIGHTS[np.where(counted, y, 0)], 0.0)
    rows = reference.distillation_loss(s, t, y, reduction="none", return_components=True, **kwargs)
    assert isinstance(rows.count, np.ndarray)
    assert rows.count.dtype == np.bool_
    np.testing.assert_array_equal(rows.count, counted)
    np.testing.assert_array_equal(rows.weight_sum, label_w)
    np.testing.assert_allclose(rows.loss, 0.3 * 4.0 * rows.divergence + 0.7 * rows.cross_entropy)
    div_rows = reference.divergence(
        s, t, kind=kind, beta=beta, skew=skew, temperature=2.0, reduction="none", mask=counted
    )
    np.testing.assert_array_equal(rows.divergence, div_rows)
    ce_rows = reference.cross_entropy(
        s, y, reduction="none", label_smoothing=0.1, class_weight=WEIGHTS, mask=MASK
    )
    np.testing.assert_array_equal(rows.cross_entropy, ce_rows)
    total = reference.distillation_loss(s, t, y, reduction="sum", return_components=True, **kwargs)
    assert total.count == int(counted.sum())
    assert type(total.count) is int
    assert total.weight_sum == pytest.approx(label_w.sum())
    for field in ("loss", "divergence", "cross_entropy"):
        assert getattr(total, field) == pytest.approx(np.sum(getattr(rows, field)), rel=1e-14)
    mean = reference.distillation_loss(s, t, y, return_components=True, **kwargs)
    assert mean.divergence == pytest.approx(total.divergence / total.count, rel=1e-14)
    assert mean.cross_entropy == pytest.approx(total.cross_entropy / total.weight_sum, rel=1e-14)
    assert mean.loss == pytest.approx(0.3 * 4.0 * mean.divergence + 0.7 * mean.cross_entropy)
    assert reference.distillation_loss(s, t, y, **kwargs) == mean.loss
    halves = reference.distillation_loss(s, t, y, normalizer=(2.0, 4.0), **kwargs)
    assert halves == pytest.approx(0.3 * 4.0 * total.divergence / 2 + 0.7 * total.cross_entropy / 4)
    both = reference.distillation_loss(s, t, y, reduction="sum", normalizer=8.0, **kwargs)
    assert both == pytest.approx(total.loss / 8.0, rel=1e-14)


def test_t2_scale() -> None:
    s, t, y = _inputs(9)
    for kind in DIVERGENCES:
        on = reference.distillation_loss_and_grad(
            s, t, y, temperature=3.0, alpha=1.0, divergence=kind
        )
        off = reference.distillation_loss_and_grad(
            s, t, y, temperature=3.0, alpha=1.0, divergence=kind, t2_scale=False
        )
        assert on[0] == pytest.approx(9.0 * off[0], rel=1e-14)
        np.testing.assert_allclose(on[1], 9.0 * off[1], rtol=1e-14)


def test_defaults_keep_hintons_loss() -> None:
    """With the defaults the loss is today's: alpha T**2 KL + (1 - alpha) CE."""
    s, t, y = _inputs(10)
    loss = reference.distillation_loss(s, t, y, temperature=2.0, alpha=0.4)
    counted = y != IGNORE
    kl = reference.kl_divergence(s[counted], t[counted], temperature=2.0)
    ce = reference.cross_entropy(s, y)
    assert loss == pytest.approx(0.4 * 4.0 * kl + 0.6 * ce, rel=1e-14)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("weighted", [True, False])
def test_gradient_accumulation(kind: str, weighted: bool) -> None:
    """Four micro-batches given the full batch's (count, weight_sum) as their normalizer sum to
    the full batch's "mean" loss and gradient, with class weights (one N suffices without)."""
    rng = np.random.default_rng(11)
    shape = (8, 5, 7)
    s = rng.standard_normal(shape) * 2.0
    t = rng.standard_normal(shape) * 2.0
    y = rng.integers(0, shape[-1], size=shape[:-1])
    y[rng.random(y.shape) < 0.3] = IGNORE
    mask = rng.random(y.shape) < 0.8
    kwargs: dict[str, Any] = {
        "divergence": kind,
        "temperature": 2.0,
        "alpha": 0.6,
        "label_smoothing": 0.1,
        "class_weight": rng.random(shape[-1]) * 2.0 if weighted else None,
    }
    full, full_grad = reference.distillation_loss_and_grad(
        s, t, y, mask=mask, return_components=True, **kwargs
    )
    assert isinstance(full, Components)
    normalizer: Any = (full.count, full.weight_sum) if weighted else full.count
    if not weighted:
        assert full.weight_sum == full.count
    total = 0.0
    grads = []
    for part in np.split(np.arange(shape[0]), 4):
        loss, grad = reference.distillation_loss_and_grad(
            s[part], t[part], y[part], mask=mask[part], normalizer=normalizer, **kwargs
        )
        assert isinstance(loss, float)
        total += loss
        grads.append(grad)
    assert total == pytest.approx(full.loss, rel=1e-13)
    np.testing.assert_allclose(np.concatenate(grads), full_grad, rtol=1e-13, atol=1e-17)


def test_rows_are_all_leading_axes() -> None:
    s, t, y = _inputs(12, (2, 2, 3, 4))
    flat = reference.distillation_loss(
        s.reshape(-1, 4), t.reshape(-1, 4), y.ravel(), divergence="jsd", reduction="none"
    )
    rows = reference.distillation_loss(s, t, y, divergence="jsd", reduction="none")
    np.testing.assert_array_equal(np.asarray(rows).ravel(), flat)
    one = reference.distillation_loss(
        s[0, 0, 0],
        t[0, 0, 0],
        y[0, 0, 0],
        reduction="none",
        divergence="tvd",
        return_components=True,
    )
    assert isinstance(one.loss, np.ndarray)
    assert one.loss.shape == ()
    assert one.count.shape == ()


# --- option checks --------------------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"beta": -0.1, "divergence": "jsd"}, ValueError, "beta"),
    ({"beta": 1.5}, ValueError, "beta"),
    ({"beta": math.nan}, ValueError, "beta"),
    ({"beta": "0.5"}, TypeError, "beta"),
    ({"skew": 1.01}, ValueError, "skew"),
    ({"skew": math.nan}, ValueError, "skew"),
    ({"skew": None}, TypeError, "skew"),
    ({"divergence": "js"}, ValueError, "divergence"),
    ({"divergence": 3}, TypeError, "divergence"),
    ({"t2_scale": 1}, TypeError, "t2_scale"),
    ({"label_smoothing": -0.01}, ValueError, "label_smoothing"),
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    ({"label_smoothing": True}, TypeError, "label_smoothing"),
    ({"class_weight": np.ones(4)}, ValueError, "class_weight"),
    ({"class_weight": np.ones((1, 5))}, ValueError, "class_weight"),
    ({"class_weight": [1.0, -1.0, 1.0, 1.0, 1.0]}, ValueError, "class_weight"),
    ({"class_weight": [1.0, np.inf, 1.0, 1.0, 1.0]}, ValueError, "class_weight"),
    ({"class_weight": [1.0, np.nan, 1.0, 1.0, 1.0]}, ValueError, "class_weight"),
    ({"class_weight": np.ones(5, dtype=complex)}, TypeError, "class_weight"),
    ({"class_weight": ["a"] * 5}, TypeError, "class_weight"),
    ({"class_weight": np.ones(5, dtype=bool)}, TypeError, "class_weight"),
    ({"mask": np.ones((2, 4), dtype=bool)}, ValueError, "mask"),
    ({"mask": np.ones((2, 3))}, TypeError, "mask"),
    ({"mask": np.ones((2, 3), dtype=np.int8)}, TypeError, "mask"),
    ({"normalizer": 0.0}, ValueError, "normalizer"),
    ({"normalizer": -2.0}, ValueError, "normalizer"),
    ({"normalizer": math.inf}, ValueError, "normalizer"),
    ({"normalizer": math.nan}, ValueError, "normalizer"),
    ({"normalizer": (1.0, 0.0)}, ValueError, "normalizer"),
    ({"normalizer": (1.0, 2.0, 3.0)}, ValueError, "normalizer"),
    ({"normalizer": "8"}, TypeError, "normalizer"),
    ({"normalizer": 4.0, "reduction": "none"}, ValueError, "normalizer"),
    ({"alpha": 0.5, "labels": None}, ValueError, "labels"),
]


@pytest.mark.parametrize(("options", "error", "name"), BAD_OPTIONS)
def test_bad_options_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    s, t, y = _inputs(13)
    kwargs = dict(options)
    labels = kwargs.pop("labels", y)
    with pytest.raises(error, match=name):
        reference.distillation_loss(s, t, labels, **kwargs)
    with pytest.raises(error, match=name):
        reference.distillation_loss_and_grad(s, t, labels, **kwargs)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda s, t, y: reference.divergence(s, t, kind="kl"), ValueError, "kind"),
        (lambda s, t, y: reference.divergence(s, t, beta=2.0), ValueError, "beta"),
        (
            lambda s, t, y: reference.divergence(s, t, normalizer=(1.0, 2.0)),
            TypeError,
            "normalizer",
        ),
        (lambda s, t, y: reference.divergence(s, t, mask=[True]), ValueError, "mask"),
        (
            lambda s, t, y: reference.cross_entropy(s, y, label_smoothing=2.0),
            ValueError,
            "label_smoothing",
        ),
        (
            lambda s, t, y: reference.cross_entropy(s, y, class_weight=[1.0]),
            ValueError,
            "class_weight",
        ),
        (
            lambda s, t, y: reference.cross_entropy(s, y, reduction="none", normalizer=1.0),
            ValueError,
            "normalizer",
        ),
    ],
)
def test_bad_options_of_divergence_and_cross_entropy(
    call: Callable[..., object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        call(*_inputs(14))


def test_class_weight_is_read_not_changed() -> None:
    s, t, y = _inputs(15)
    weights = np.array([1.0, 2.0, 0.0, 1.5, 1.0])
    weights.flags.writeable = False
    before = weights.copy()
    int_weights = reference.cross_entropy(s, y, class_weight=np.array([1, 2, 0, 3, 1]))
    assert int_weights == pytest.approx(
        reference.cross_entropy(s, y, class_weight=[1.0, 2.0, 0.0, 3.0, 1.0]), rel=0
    )
    reference.distillation_loss_and_grad(s, t, y, class_weight=weights, label_smoothing=0.2)
    np.testing.assert_array_equal(weights, before)
    strided = np.arange(10.0)[::2] / 4.0
    assert math.isfinite(reference.cross_entropy(s, y, class_weight=strided))


def test_components_is_exported() -> None:
    assert kdloss.Components is Components
    assert "Components" in kdloss.__all__
    assert Components._fields == ("loss", "divergence", "cross_entropy", "count", "weight_sum")
