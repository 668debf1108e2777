"""The peers' conventions, pinned: what kdloss agrees with and where it differs, on purpose.

Each peer's loss is re-implemented below in NumPy from its published source (no torch import),
line for line where the arithmetic matters (log space or not, what is masked, what a reduction
divides by):

- TRL ``GKDTrainer.generalized_jsd_loss``, ``trl/experimental/gkd/gkd_trainer.py`` @ 7310b81f;
- PyTorch ``F.cross_entropy`` (``aten/src/ATen/native/LossNLL.cpp``,
  ``cross_entropy_loss_label_smoothing`` and ``nll_loss``) and ``F.kl_div(..., log_target=True)``
  (``aten/src/ATen/native/Loss.cpp`` and ``torch/nn/functional.py``);
- Liger Kernel's TVD, ``src/liger_kernel/ops/tvd.py`` @ 200bac9b, and JSD,
  ``src/liger_kernel/ops/jsd.py`` @ 01ed3837 (its kernel's arithmetic, in float64 here);
- DistiLLM's ``skewed_forward_kl``, ``skewed_reverse_kl``, ``js_distance`` and ``tv_distance``,
  ``distillm/losses.py`` @ 17c0f98b.

Where the conventions agree the values must match; where they differ the documented difference
is asserted. The tests run over ``IMPLEMENTATIONS``, the float64 reference and kdloss itself:
modules with ``distillation_loss``, ``distillation_loss_and_grad``, ``divergence``,
``kl_divergence`` and ``cross_entropy`` taking the same keywords; a test of a divergence runs on
those whose ``DIVERGENCES`` have it.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from kdloss import reference

IMPLEMENTATIONS: list[ModuleType] = [reference, kdloss]

IGNORE = -100
RTOL = 1e-10
Array = npt.NDArray[np.float64]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


def _having(*kinds: str) -> Any:
    """Parametrizes a test's ``impl`` over the implementations that compute every divergence
    in ``kinds`` (all of them once each has it)."""
    having = [m for m in IMPLEMENTATIONS if set(kinds) <= set(m.DIVERGENCES)]
    return pytest.mark.parametrize("impl", having, ids=lambda m: m.__name__)


def _quiet() -> Any:
    """PyTorch computes 0/0 and 0 * inf silently; NumPy would warn (an error under pytest)."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")


def _torch_log_softmax(x: Array) -> Array:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    result: Array = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return result


def _torch_softmax(x: Array) -> Array:
    result: Array = np.exp(_torch_log_softmax(x))
    return result


def _kl_div_log_target(inp: Array, target: Array) -> Array:
    """``F.kl_div(inp, target, reduction="none", log_target=True)``: ``exp(t) * (t - inp)``."""
    with _quiet():
        result: Array = np.exp(target) * (target - inp)
    return result


def _inputs(
    shape: tuple[int, ...], seed: int, ignored: float = 0.25
) -> tuple[Array, Array, npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(shape) * 2.0
    t = rng.standard_normal(shape) * 2.0
    y = rng.integers(0, shape[-1], size=shape[:-1])
    y[rng.random(y.shape) < ignored] = IGNORE
    y.flat[0] = 0
    return s, t, y


# --- TRL generalized_jsd_loss ---------------------------------------------------------------


def trl_generalized_jsd_loss(
    student_logits: Array,
    teacher_logits: Array,
    labels: npt.NDArray[np.int64] | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> Any:
    student_log_probs = _torch_log_softmax(student_logits / temperature)
    teacher_log_probs = _torch_log_softmax(teacher_logits / temperature)
    if beta == 0:
        jsd = _kl_div_log_target(student_log_probs, teacher_log_probs)
    elif beta == 1:
        jsd = _kl_div_log_target(teacher_log_probs, student_log_probs)
    else:
        with _quiet():
            mixture_log_probs = np.logaddexp(
                student_log_probs + math.log(1 - beta), teacher_log_probs + math.log(beta)
            )
        kl_teacher = _kl_div_log_target(mixture_log_probs, teacher_log_probs)
        kl_student = _kl_div_log_target(mixture_log_probs, student_log_probs)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]
    with _quiet():
        if reduction == "batchmean":
            if labels is not None:
                return jsd.sum() / mask.sum()
            return jsd.sum() / jsd.shape[0]
        if reduction == "sum":
            return jsd.sum()
        if reduction == "mean":
            return jsd.mean()
    return jsd


def _jsd(impl: ModuleType, s: Array, t: Array, y: Any, **kwargs: Any) -> Any:
    """The divergence through distillation_loss: alpha = 1, no T**2, rows selected by labels."""
    return impl.distillation_loss(s, t, y, alpha=1.0, t2_scale=False, divergence="jsd", **kwargs)


@_having("jsd")
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.1, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
def test_trl_jsd_batchmean_and_sum_agree(impl: ModuleType, beta: float, temperature: float) -> None:
    """batchmean with labels is kdloss's "mean" (over counted rows), sum is "sum"; beta = 0 is
    forward KL and beta = 1 reverse KL in both (TRL compares beta exactly)."""
    s, t, y = _inputs((3, 4, 11), 1)
    options = {"beta": beta, "temperature": temperature}
    trl = trl_generalized_jsd_loss(s, t, y, reduction="batchmean", **options)
    assert _jsd(impl, s, t, y, **options) == pytest.approx(float(trl), rel=RTOL)
    by_mask = impl.divergence(s, t, kind="jsd", mask=y != IGNORE, **options)
    assert by_mask == pytest.approx(float(trl), rel=RTOL)
    trl_sum = trl_generalized_jsd_loss(s, t, y, reduction="sum", **options)
    assert _jsd(impl, s, t, y, reduction="sum", **options) == pytest.approx(
        float(trl_sum), rel=RTOL
    )
    # num_items_in_batch (newer TRL) divides the sum by a given count: kdloss's normalizer.
    n = 17.0
    assert _jsd(impl, s, t, y, normalizer=n, **options) == pytest.approx(
        float(trl_sum) / n, rel=RTOL
    )
    if beta in (0.0, 1.0):
        plain = "forward_kl" if beta == 0.0 else "reverse_kl"
        kl = impl.divergence(s, t, kind=plain, temperature=temperature, mask=y != IGNORE)
        assert kl == pytest.approx(float(trl), rel=RTOL)


@_having("jsd")
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_trl_jsd_mean_and_none_differ_in_shape_of_the_average(
    impl: ModuleType, beta: float
) -> None:
    """TRL's "mean" averages over the N * V elements (kdloss's "mean" times 1/V); its "none"
    keeps the elements, whose sum over the vocabulary is kdloss's per-row value."""
    s, t, y = _inputs((2, 5, 9), 2)
    trl_mean = trl_generalized_jsd_loss(s, t, y, beta=beta, reduction="mean", temperature=2.0)
    ours = _jsd(impl, s, t, y, beta=beta, temperature=2.0)
    assert float(trl_mean) == pytest.approx(ours / s.shape[-1], rel=RTOL)
    trl_none = trl_generalized_jsd_loss(s, t, y, beta=beta, reduction="none", temperature=2.0)
    rows = _jsd(impl, s, t, y, beta=beta, temperature=2.0, reduction="none")
    counted = y != IGNORE
    np.testing.assert_allclose(trl_none.sum(axis=-1), np.asarray(rows)[counted], rtol=RTOL)
    np.testing.assert_array_equal(np.asarray(rows)[~counted], 0.0)


@_having("jsd")
def test_trl_jsd_batchmean_without_labels_divides_by_the_batch(impl: ModuleType) -> None:
    """Without labels TRL divides by ``size(0)``: the batch, not the batch's rows. For
    (batch, seq, vocab) logits that is seq times kdloss's mean over rows; for 2-D logits the
    two agree."""
    s, t, _ = _inputs((3, 4, 8), 3)
    trl = trl_generalized_jsd_loss(s, t, None, beta=0.5)
    ours = impl.divergence(s, t, kind="jsd", beta=0.5)
    assert float(trl) == pytest.approx(4 * ours, rel=RTOL)
    flat_s, flat_t = s.reshape(-1, 8), t.reshape(-1, 8)
    trl_2d = trl_generalized_jsd_loss(flat_s, flat_t, None, beta=0.5)
    assert float(trl_2d) == pytest.approx(impl.divergence(flat_s, flat_t, kind="jsd"), rel=RTOL)


@_having("jsd")
def test_trl_jsd_all_ignored_is_nan_where_kdloss_gives_zero(impl: ModuleType) -> None:
    s, t, y = _inputs((2, 3, 6), 4)
    y[...] = IGNORE
    assert math.isnan(float(trl_generalized_jsd_loss(s, t, y)))
    assert _jsd(impl, s, t, y) == 0.0


@_having("jsd")
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_trl_jsd_masked_classes_are_nan_where_kdloss_is_finite(
    impl: ModuleType, beta: float
) -> None:
    """A class both sides mask with -inf: F.kl_div's ``exp(t) * (t - x)`` is ``0 * nan``;
    kdloss takes ``0 * log 0 = 0``, so the masked class is simply left out."""
    s, t, y = _inputs((2, 7), 5, ignored=0.0)
    s[:, 3] = -np.inf
    t[:, 3] = -np.inf
    assert math.isnan(float(trl_generalized_jsd_loss(s, t, y, beta=beta)))
    keep = [0, 1, 2, 4, 5, 6]
    ours = _jsd(impl, s, t, y, beta=beta)
    want = trl_generalized_jsd_loss(s[:, keep], t[:, keep], y * 0, beta=beta)
    assert ours == pytest.approx(float(want), rel=RTOL)


# --- PyTorch F.cross_entropy ------------------------------------------------------------------


def torch_cross_entropy(
    inp: Array,
    target: npt.NDArray[np.int64],
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    """``F.cross_entropy`` for (N, C) logits and class-index targets."""
    log_q = _torch_log_softmax(inp)
    n_classes = inp.shape[-1]
    ignore_mask = target == ignore_index
    safe = np.where(ignore_mask, 0, target)
    w = np.ones(n_classes) if weight is None else weight
    with _quiet():
        # nll_loss: -w[t] * x[t], ignored samples 0; "mean" divides by the targets' weights.
        nll_rows = np.where(ignore_mask, 0.0, -w[safe] * log_q[np.arange(len(target)), safe])
        total_weight = w[target[~ignore_mask]].sum()
        nll = {"mean": nll_rows.sum() / total_weight, "sum": nll_rows.sum(), "none": nll_rows}
        if label_smoothing <= 0.0:
            return nll[reduction]
        smooth_loss = -(log_q * w).sum(axis=1)
        smooth_loss = np.where(ignore_mask, 0.0, smooth_loss)
        ret = {
            "mean": smooth_loss.sum()
            / (total_weight if weight is not None else (~ignore_mask).sum()),
            "sum": smooth_loss.sum(),
            "none": smooth_loss,
        }[reduction]
        return (1 - label_smoothing) * nll[reduction] + ret * (label_smoothing / n_classes)


CE_CASES = [
    {},
    {"label_smoothing": 0.1},
    {"weight": "w"},
    {"weight": "w", "label_smoothing": 0.25},
    {"weight": "w", "label_smoothing": 1.0},
    {"ignore_index": 2, "label_smoothing": 0.3},
]


@pytest.mark.parametrize("case", CE_CASES, ids=[str(c) for c in CE_CASES])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_cross_entropy_agrees(impl: ModuleType, case: dict[str, Any], reduction: str) -> None:
    s, t, y = _inputs((12, 6), 6)
    weights = np.array([0.5, 2.0, 1.0, 0.0, 3.0, 1.5])
    ignore_index = case.get("ignore_index", IGNORE)
    eps = case.get("label_smoothing", 0.0)
    w = weights if case.get("weight") else None
    want = torch_cross_entropy(s, y, w, ignore_index, reduction, eps)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": eps}
    got = impl.cross_entropy(s, y, class_weight=w, **kwargs)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # The same term inside the distillation loss, at alpha = 0 (the teacher not read).
    through = impl.distillation_loss(
        s, np.full_like(t, np.nan), y, alpha=0.0, class_weight=w, **kwargs
    )
    np.testing.assert_allclose(through, want, rtol=RTOL)


def test_torch_cross_entropy_all_ignored_is_nan_where_kdloss_gives_zero(impl: ModuleType) -> None:
    s, _, y = _inputs((4, 5), 7)
    y[...] = IGNORE
    for eps in (0.0, 0.2):
        assert math.isnan(float(torch_cross_entropy(s, y, label_smoothing=eps)))
        assert impl.cross_entropy(s, y, label_smoothing=eps) == 0.0


def test_torch_cross_entropy_zero_weight_times_inf_is_nan_where_kdloss_gives_zero(
    impl: ModuleType,
) -> None:
    """A class of weight 0 whose student logit is -inf: PyTorch's smoothing term is
    ``0 * inf = nan``; in kdloss that class contributes 0."""
    s = np.array([[1.0, -np.inf, 0.5, 2.0], [0.0, -np.inf, 1.0, 1.0]])
    y = np.array([0, 3])
    w = np.array([1.0, 0.0, 2.0, 1.0])
    assert math.isnan(float(torch_cross_entropy(s, y, w, label_smoothing=0.1)))
    got = impl.cross_entropy(s, y, class_weight=w, label_smoothing=0.1)
    log_q = _torch_log_softmax(s)
    keep = [0, 2, 3]
    rows = 0.9 * w[y] * -log_q[np.arange(2), y] + 0.1 / 4 * np.sum(
        w[keep] * -log_q[:, keep], axis=1
    )
    assert got == pytest.approx(float(rows.sum() / w[y].sum()), rel=RTOL)
    assert math.isfinite(got)


# --- PyTorch F.kl_div(..., log_target=True) -------------------------------------------------


def torch_kl_div_log_target(inp: Array, target: Array, reduction: str) -> Any:
    out = _kl_div_log_target(inp, target)
    if reduction == "batchmean":
        return out.sum() / inp.shape[0]
    if reduction == "sum":
        return out.sum()
    if reduction == "mean":
        return out.mean()
    return out


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_torch_kl_div_agrees(impl: ModuleType, temperature: float) -> None:
    """batchmean on (N, C) is kdloss's forward KL "mean"; "sum" is "sum"; "mean" averages over
    N * C elements; on (B, S, V) batchmean divides by B alone (S times kdloss's mean)."""
    s, t, _ = _inputs((6, 10), 8)
    log_q = _torch_log_softmax(s / temperature)
    log_p = _torch_log_softmax(t / temperature)
    for module_call in (
        lambda r: impl.kl_divergence(s, t, temperature=temperature, reduction=r),
        lambda r: impl.divergence(s, t, kind="forward_kl", temperature=temperature, reduction=r),
    ):
        batchmean = torch_kl_div_log_target(log_q, log_p, "batchmean")
        assert module_call("mean") == pytest.approx(float(batchmean), rel=RTOL)
        assert module_call("sum") == pytest.approx(
            float(torch_kl_div_log_target(log_q, log_p, "sum")), rel=RTOL
        )
        elementwise = torch_kl_div_log_target(log_q, log_p, "mean")
        assert float(elementwise) == pytest.approx(module_call("mean") / 10, rel=RTOL)
        np.testing.assert_allclose(
            torch_kl_div_log_target(log_q, log_p, "none").sum(axis=-1),
            module_call("none"),
            rtol=RTOL,
        )
    s3, t3 = s.reshape(2, 3, 10), t.reshape(2, 3, 10)
    batch = torch_kl_div_log_target(
        _torch_log_softmax(s3 / temperature), _torch_log_softmax(t3 / temperature), "batchmean"
    )
    assert float(batch) == pytest.approx(
        3 * impl.kl_divergence(s3, t3, temperature=temperature), rel=RTOL
    )
    # Hinton's term as kdloss computes it at alpha = 1: T**2 times the batchmean.
    hinton = impl.distillation_loss(s, t, None, alpha=1.0, temperature=temperature)
    assert hinton == pytest.approx(temperature**2 * float(batchmean), rel=RTOL)


def test_torch_kl_div_masked_teacher_class_is_nan_where_kdloss_is_finite(impl: ModuleType) -> None:
    s, t, _ = _inputs((3, 5), 9)
    s[:, 1] = -np.inf
    t[:, 1] = -np.inf
    torch_value = torch_kl_div_log_target(_torch_log_softmax(s), _torch_log_softmax(t), "batchmean")
    assert math.isnan(float(torch_value))
    assert math.isfinite(impl.kl_divergence(s, t))


# --- Liger TVD ----------------------------------------------------------------------------------


def liger_tvd(
    p: Array,
    q: Array,
    shift_labels: npt.NDArray[np.int64] | None = None,
    reduction: str = "batchmean",
    ignore_index: int = -100,
) -> tuple[Any, Array]:
    """``LigerTVDLossFunction.forward``: the loss and the saved gradient with respect to ``p``
    (its first argument, the distribution being trained)."""
    bt, v = p.shape
    loss = 0.5 * np.abs(p - q)
    grads = np.where(p > q, 0.5, -0.5)
    if shift_labels is not None:
        ignored = shift_labels == ignore_index
        loss = np.where(ignored[:, None], 0.0, loss)
        grads = np.where(ignored[:, None], 0.0, grads)
        n_non_ignore = int(np.sum(~ignored))
    else:
        n_non_ignore = bt
    # A tensor divided by the Python int 0 is NaN (0/0), not an exception.
    n = np.float64(n_non_ignore)
    with _quiet():
        if reduction == "batchmean":
            return loss.sum() / n, grads / n
        if reduction == "sum":
            return loss.sum(), grads
        if reduction == "mean":
            return loss.sum() / (n * v), grads / (n * v)
    return loss, grads


def _softmax_backward(q: Array, g: Array) -> Array:
    """A gradient with respect to the probabilities ``q = softmax(z)`` carried to ``z``."""
    result: Array = q * (g - np.sum(q * g, axis=-1, keepdims=True))
    return result


def _tvd_grad(impl: ModuleType, s: Array, t: Array, y: Any, **kwargs: Any) -> tuple[Any, Array]:
    return impl.distillation_loss_and_grad(
        s, t, y, alpha=1.0, t2_scale=False, divergence="tvd", **kwargs
    )


@_having("tvd")
def test_liger_tvd_agrees_away_from_ties(impl: ModuleType) -> None:
    """batchmean is kdloss's "mean", sum is "sum", "none" (elementwise) sums to the rows; the
    gradient, carried through the softmax, is kdloss's; Liger's "mean" divides by n * V."""
    s, t, y = _inputs((9, 7), 10)
    p, q = _torch_softmax(s), _torch_softmax(t)
    loss, g = liger_tvd(p, q, y)
    ours, grad = _tvd_grad(impl, s, t, y)
    assert ours == pytest.approx(float(loss), rel=RTOL)
    np.testing.assert_allclose(grad, _softmax_backward(p, g), rtol=1e-9, atol=1e-15)
    total, _ = liger_tvd(p, q, y, reduction="sum")
    assert _tvd_grad(impl, s, t, y, reduction="sum")[0] == pytest.approx(float(total), rel=RTOL)
    mean, _ = liger_tvd(p, q, y, reduction="mean")
    assert float(mean) == pytest.approx(ours / 7, rel=RTOL)
    rows, _ = liger_tvd(p, q, y, reduction="none")
    np.testing.assert_allclose(
        rows.sum(axis=-1), _tvd_grad(impl, s, t, y, reduction="none")[0], rtol=RTOL, atol=1e-300
    )


@_having("tvd")
def test_liger_tvd_ties_take_minus_half_where_kdloss_takes_zero(impl: ModuleType) -> None:
    """Where p == q exactly, Liger's kernel uses -0.5 and kdloss the subgradient 0, so the
    logits' gradients differ on such a row (and agree on the others)."""
    s = np.array([[0.0, 1.0, 2.0, 3.0], [0.5, -1.0, 2.0, 0.0]])
    t = np.array([[0.0, 2.0, 1.0, 3.0], [0.0, 1.0, 1.5, -0.5]])
    p, q = _torch_softmax(s), _torch_softmax(t)
    assert p[0, 0] == q[0, 0], "the first row must tie exactly at classes 0 and 3"
    assert p[0, 3] == q[0, 3]
    _, g = liger_tvd(p, q, reduction="sum")
    _, grad = _tvd_grad(impl, s, t, None, reduction="sum")
    tie_free = _softmax_backward(p, np.where(p == q, 0.0, g))
    np.testing.assert_allclose(grad, tie_free, rtol=1e-9, atol=1e-15)
    liger_grad = _softmax_backward(p, g)
    np.testing.assert_allclose(grad[1], liger_grad[1], rtol=1e-9, atol=1e-15)
    assert not np.allclose(grad[0], liger_grad[0], rtol=1e-6, atol=0.0)


@_having("tvd")
def test_liger_tvd_all_ignored_is_nan_where_kdloss_gives_zero(impl: ModuleType) -> None:
    """Liger divides the loss and the gradient by ``n_non_ignore = 0``: NaN for both."""
    s, t, y = _inputs((3, 4), 11)
    y[...] = IGNORE
    loss, g = liger_tvd(_torch_softmax(s), _torch_softmax(t), y)
    assert math.isnan(float(loss))
    assert np.all(np.isnan(g))
    ours, grad = _tvd_grad(impl, s, t, y)
    assert ours == 0.0
    assert not np.any(grad)


# --- Liger JSD ----------------------------------------------------------------------------------


def liger_jsd(
    x: Array,
    y: Array,
    shift_labels: npt.NDArray[np.int64] | None = None,
    beta: float = 0.5,
    ignore_index: int = -100,
) -> tuple[Any, Array]:
    """``LigerJSDFunction.forward(_input=log q, target=log p)``: the loss and its gradient with
    respect to the student's log-probabilities ``x``. The mixture is formed in probability
    space, ``log(beta * P + (1 - beta) * Q)``."""
    n_non_ignore = x.shape[0] if shift_labels is None else int(np.sum(shift_labels != ignore_index))
    with _quiet():
        q, p = np.exp(x), np.exp(y)
        if beta == 0.0:
            loss, dx = p * (y - x), -p
        elif beta == 1.0:
            loss = q * (x - y)
            dx = loss + q
        else:
            m = beta * p + (1 - beta) * q
            log_m = np.log(m)
            loss = beta * p * y + (1 - beta) * q * x - m * log_m
            dx = (1 - beta) * q * (x - log_m)
        scale = 1.0 / n_non_ignore
        loss, dx = loss * scale, dx * scale
    if shift_labels is not None:
        ignored = (shift_labels == ignore_index)[:, None]
        loss, dx = np.where(ignored, 0.0, loss), np.where(ignored, 0.0, dx)
    return loss.sum(), dx


def _log_softmax_backward(q: Array, g: Array) -> Array:
    """A gradient with respect to the log-probabilities ``log_softmax(z)`` carried to ``z``."""
    result: Array = g - q * np.sum(g, axis=-1, keepdims=True)
    return result


@_having("jsd")
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_liger_jsd_agrees(impl: ModuleType, beta: float) -> None:
    """LigerJSD's loss over counted rows is kdloss's "mean"; its gradient with respect to the
    log-probabilities, carried through log-softmax, is kdloss's; beta 0 and 1 are forward and
    reverse KL in both."""
    s, t, y = _inputs((8, 6), 17)
    x, target = _torch_log_softmax(s), _torch_log_softmax(t)
    loss, dx = liger_jsd(x, target, y, beta=beta)
    ours, grad = impl.distillation_loss_and_grad(
        s, t, y, alpha=1.0, t2_scale=False, divergence="jsd", beta=beta
    )
    assert ours == pytest.approx(float(loss), rel=RTOL)
    np.testing.assert_allclose(grad, _log_softmax_backward(np.exp(x), dx), rtol=1e-9, atol=1e-15)


@_having("jsd")
def test_liger_jsd_is_nan_where_both_distributions_underflow(impl: ModuleType) -> None:
    """A class where both probabilities underflow to 0 (logits near -1e4 at T = 0.5, here -2e4
    at T = 1): Liger's ``m * log m`` is ``0 * -inf``; kdloss's log-space mixture is finite."""
    s = np.array([[0.0, -2e4, 1.0], [2.0, 0.5, 0.0]])
    t = np.array([[0.5, -2e4, 0.0], [0.0, 1.0, 1.0]])
    loss, _ = liger_jsd(_torch_log_softmax(s), _torch_log_softmax(t))
    assert math.isnan(float(loss))
    ours = impl.divergence(s, t, kind="jsd")
    assert math.isfinite(ours)
    rows = [
        impl.divergence(s[0, [0, 2]], t[0, [0, 2]], kind="jsd"),
        impl.divergence(s[1], t[1], kind="jsd"),
    ]
    assert ours == pytest.approx(sum(rows) / 2, rel=1e-12)


# --- DistiLLM skew KL and skew reverse KL ------------------------------------------------------


def _distillm_common(
    logits: Array, teacher_logits: Array, labels: npt.NDArray[np.int64]
) -> tuple[Array, Array, Array, Array]:
    teacher_probs = _torch_softmax(teacher_logits)
    student_probs = _torch_softmax(logits)
    mask = (labels != -100).astype(np.int64).ravel()
    inf_mask = np.isinf(logits) | np.isinf(teacher_logits)
    return teacher_probs, student_probs, mask, inf_mask


def _masked_mean(x: Array, mask: Array) -> Any:
    with _quiet():
        return np.sum(x * mask, axis=0) / np.sum(mask, axis=0)


def distillm_skewed_forward_kl(
    logits: Array, teacher_logits: Array, labels: npt.NDArray[np.int64], lam: float = 0.1
) -> Any:
    teacher_probs, student_probs, mask, inf_mask = _distillm_common(logits, teacher_logits, labels)
    mixed_probs = lam * teacher_probs + (1 - lam) * student_probs
    with _quiet():
        mixed_logprobs = np.log(mixed_probs)
        prod_probs = np.where(inf_mask, 0.0, teacher_probs * mixed_logprobs)
    x = np.sum(prod_probs, axis=-1).ravel()
    return -_masked_mean(x, mask)


def distillm_skewed_reverse_kl(
    logits: Array, teacher_logits: Array, labels: npt.NDArray[np.int64], lam: float = 0.1
) -> Any:
    teacher_probs, student_probs, mask, inf_mask = _distillm_common(logits, teacher_logits, labels)
    mixed_probs = (1 - lam) * teacher_probs + lam * student_probs
    student_logprobs = _torch_log_softmax(logits)
    with _quiet():
        mixed_logprobs = np.log(mixed_probs)
        prod_probs = np.where(inf_mask, 0.0, student_probs * mixed_logprobs)
        prod_probs = prod_probs - np.where(inf_mask, 0.0, student_probs * student_logprobs)
    x = np.sum(prod_probs, axis=-1).ravel()
    return -_masked_mean(x, mask)


def distillm_js_distance(
    logits: Array, teacher_logits: Array, labels: npt.NDArray[np.int64], lam: float = 0.9
) -> Any:
    teacher_probs, student_probs, mask, inf_mask = _distillm_common(logits, teacher_logits, labels)
    mixed_probs = (1 - lam) * teacher_probs + lam * student_probs
    teacher_logprobs = _torch_log_softmax(teacher_logits)
    student_logprobs = _torch_log_softmax(logits)
    with _quiet():
        mixed_logprobs = np.log(mixed_probs)
        prod = np.where(inf_mask, 0.0, student_probs * mixed_logprobs)
        prod = prod - np.where(inf_mask, 0.0, student_probs * student_logprobs)
        loss = lam * -_masked_mean(np.sum(prod, axis=-1).ravel(), mask)
        prod = np.where(inf_mask, 0.0, teacher_probs * mixed_logprobs)
        prod = prod - np.where(inf_mask, 0.0, teacher_probs * teacher_logprobs)
        return loss + (1 - lam) * -_masked_mean(np.sum(prod, axis=-1).ravel(), mask)


def distillm_tv_distance(
    logits: Array, teacher_logits: Array, labels: npt.NDArray[np.int64]
) -> Any:
    teacher_probs, student_probs, mask, inf_mask = _distillm_common(logits, teacher_logits, labels)
    prod_probs = 0.5 * np.where(inf_mask, 0.0, np.abs(teacher_probs - student_probs))
    x = np.sum(prod_probs, axis=-1).ravel()
    return _masked_mean(x, mask)


def _distil(impl: ModuleType, kind: str, s: Array, t: Array, y: Any, **kwargs: Any) -> Any:
    return impl.distillation_loss(s, t, y, alpha=1.0, t2_scale=False, divergence=kind, **kwargs)


@_having("skew_reverse_kl")
@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_distillm_skewed_reverse_kl_agrees(impl: ModuleType, lam: float) -> None:
    s, t, y = _inputs((3, 4, 9), 12)
    want = distillm_skewed_reverse_kl(s, t, y, lam=lam)
    assert _distil(impl, "skew_reverse_kl", s, t, y, skew=lam) == pytest.approx(
        float(want), rel=RTOL
    )


@_having("skew_kl")
@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_distillm_skewed_forward_kl_is_a_cross_entropy(impl: ModuleType, lam: float) -> None:
    """DistiLLM returns ``-sum p log m``, the skew KL plus the teacher's entropy: the same
    gradient, a different value. kdloss's ``"skew_kl"`` is the true KL."""
    s, t, y = _inputs((3, 4, 9), 13)
    want = distillm_skewed_forward_kl(s, t, y, lam=lam)
    p = _torch_softmax(t)
    entropy_rows = -np.sum(p * np.log(p), axis=-1)
    entropy = float(np.mean(entropy_rows[y != IGNORE]))
    ours = _distil(impl, "skew_kl", s, t, y, skew=lam)
    assert ours == pytest.approx(float(want) - entropy, rel=RTOL)
    assert ours < float(want)


@_having("jsd")
@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_distillm_js_distance_is_jsd_with_beta_one_minus_lambda(
    impl: ModuleType, lam: float
) -> None:
    s, t, y = _inputs((5, 8), 14)
    want = distillm_js_distance(s, t, y, lam=lam)
    assert _distil(impl, "jsd", s, t, y, beta=1.0 - lam) == pytest.approx(float(want), rel=1e-9)


@_having("tvd")
def test_distillm_tv_distance_agrees(impl: ModuleType) -> None:
    s, t, y = _inputs((5, 8), 15)
    assert _distil(impl, "tvd", s, t, y) == pytest.approx(
        float(distillm_tv_distance(s, t, y)), rel=RTOL
    )


@_having("skew_kl", "skew_reverse_kl", "jsd", "tvd")
def test_distillm_underflow_and_all_ignored_are_nan_where_kdloss_is_finite(
    impl: ModuleType,
) -> None:
    """DistiLLM forms ``log m`` from rounded probabilities: a class where both underflow (logits
    near -1e4 at T = 0.5, here -2e4 at T = 1) is ``0 * log 0 = nan``; with every row ignored the
    mean is 0/0. kdloss gives finite values and 0.0."""
    s = np.array([[0.0, -2e4, 1.0], [1.0, 0.5, -2e4]])
    t = np.array([[0.5, -2e4, 0.0], [0.0, 1.0, -2e4]])
    y = np.array([0, 1])
    for peer, kind in (
        (distillm_skewed_forward_kl, "skew_kl"),
        (distillm_skewed_reverse_kl, "skew_reverse_kl"),
    ):
        assert math.isnan(float(peer(s, t, y)))
        value = _distil(impl, kind, s, t, y)
        assert math.isfinite(value)
        keep = [[0, 2], [0, 1]]
        rows = [
            _distil(impl, kind, s[i, cols], t[i, cols], y[i] * 0, reduction="sum")
            for i, cols in enumerate(keep)
        ]
        assert value == pytest.approx(sum(rows) / 2, rel=1e-12)
        ignored = np.full_like(y, IGNORE)
        s_fine, t_fine, _ = _inputs((2, 3), 16)
        assert math.isnan(float(peer(s_fine, t_fine, ignored)))
        assert _distil(impl, kind, s_fine, t_fine, ignored) == 0.0
