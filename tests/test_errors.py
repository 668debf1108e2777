"""Every bad input raises ValueError or TypeError naming the argument; nothing panics."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import kdloss
import numpy as np
import pytest

S = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
T = S[::-1].copy()
Y = np.array([0, 3, 1])


def _raises(expected: type[Exception], call: Callable[[], object], *names: str) -> str:
    """Run ``call``; it must raise exactly ``expected`` with a message matching every ``names``.

    Anything is caught, including a panic from the native code (pyo3_runtime.PanicException,
    a BaseException), so that it is reported as a wrong exception type rather than escaping;
    a subclass of ``expected`` does not pass either.
    """
    with pytest.raises(BaseException) as info:  # noqa: PT011 - the type is checked below
        call()
    exc = info.value
    assert type(exc) is expected, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    message = str(exc)
    for name in names:
        assert re.search(name, message, flags=re.IGNORECASE), f"{name!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------------------------------
# temperature
# ---------------------------------------------------------------------------------------------

BAD_TEMPERATURES = [0.0, -1.0, -0.5, np.nan, np.inf, -np.inf]


def _temperature_calls(temperature: float) -> list[Callable[[], object]]:
    return [
        lambda: kdloss.DistillationLoss(temperature),
        lambda: kdloss.DistillationLoss(temperature=temperature),
        lambda: kdloss.distillation_loss(S, T, Y, temperature=temperature),
        lambda: kdloss.softmax(S, temperature=temperature),
        lambda: kdloss.log_softmax(S, temperature=temperature),
        lambda: kdloss.kl_divergence(S, T, temperature=temperature),
    ]


def _value_pattern(value: float) -> str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "-inf" if value < 0 else "inf"
    return re.escape(f"{value:g}")


@pytest.mark.parametrize("temperature", BAD_TEMPERATURES, ids=str)
@pytest.mark.parametrize("which", range(6))
def test_bad_temperature(temperature: float, which: int) -> None:
    call = _temperature_calls(temperature)[which]
    _raises(ValueError, call, "temperature", _value_pattern(temperature))


# ---------------------------------------------------------------------------------------------
# alpha
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [-0.1, 1.5, -1e-9, 1 + 1e-9, np.nan, np.inf, -np.inf], ids=str)
def test_bad_alpha(alpha: float) -> None:
    # The value is named too, where its spelling does not depend on the formatter.
    pattern = _value_pattern(alpha) if alpha in (-0.1, 1.5) or not np.isfinite(alpha) else ""
    _raises(ValueError, lambda: kdloss.DistillationLoss(2.0, alpha), "alpha", pattern)
    _raises(ValueError, lambda: kdloss.DistillationLoss(alpha=alpha), "alpha", pattern)
    _raises(ValueError, lambda: kdloss.distillation_loss(S, T, Y, alpha=alpha), "alpha", pattern)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_alpha_bounds_are_allowed(alpha: float) -> None:
    loss = kdloss.distillation_loss(S, T, Y, alpha=alpha)
    assert np.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# types of the settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, np.True_, "2", None, 2j, [2.0]], ids=repr)
@pytest.mark.parametrize("name", ["temperature", "alpha"])
def test_settings_that_are_not_real_numbers(name: str, bad: Any) -> None:
    kwargs = {name: bad}
    _raises(TypeError, lambda: kdloss.DistillationLoss(**kwargs), name)
    _raises(TypeError, lambda: kdloss.distillation_loss(S, T, Y, **kwargs), name)
    _raises(TypeError, lambda: kdloss.distillation_loss_and_grad(S, T, Y, **kwargs), name)


@pytest.mark.parametrize("bad", [True, 1.0, np.float64(3.0), "0", None], ids=repr)
def test_ignore_index_that_is_not_an_integer(bad: Any) -> None:
    _raises(TypeError, lambda: kdloss.DistillationLoss(ignore_index=bad), "ignore_index")
    _raises(TypeError, lambda: kdloss.distillation_loss(S, T, Y, ignore_index=bad), "ignore_index")
    _raises(TypeError, lambda: kdloss.cross_entropy(S, Y, ignore_index=bad), "ignore_index")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30], ids=str)
def test_ignore_index_beyond_64_bits(value: int) -> None:
    _raises(ValueError, lambda: kdloss.DistillationLoss(ignore_index=value), "ignore_index")
    _raises(ValueError, lambda: kdloss.distillation_loss(S, T, Y, ignore_index=value), "ignore")
    _raises(ValueError, lambda: kdloss.cross_entropy(S, Y, ignore_index=value), "ignore_index")


@pytest.mark.parametrize(
    ("temperature", "alpha", "ignore_index"),
    [
        (2, 0.25, 3),
        (np.float32(2.0), np.float64(0.25), np.int64(3)),
        (np.int8(2), np.float16(0.25), np.uint8(3)),
        (2.0, 0.25, 2**63 - 1),
    ],
    ids=str,
)
def test_settings_of_any_real_or_integer_type(
    temperature: Any, alpha: Any, ignore_index: Any
) -> None:
    y = np.array([0, 3, 1])
    expect = kdloss.distillation_loss(S, T, y, temperature=2.0, alpha=0.25, ignore_index=3)
    if ignore_index != 3:
        expect = kdloss.distillation_loss(S, T, y, temperature=2.0, alpha=0.25, ignore_index=-1)
    got = kdloss.distillation_loss(
        S, T, y, temperature=temperature, alpha=alpha, ignore_index=ignore_index
    )
    assert got == expect
    loss_fn = kdloss.DistillationLoss(temperature, alpha, ignore_index=ignore_index)
    assert loss_fn(S, T, y) == expect


# ---------------------------------------------------------------------------------------------
# reduction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["avg", "batchmean", "", "elementwise_mean", "means"])
def test_unknown_reduction(reduction: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: kdloss.DistillationLoss(reduction=reduction),
        lambda: kdloss.distillation_loss(S, T, Y, reduction=reduction),
        lambda: kdloss.kl_divergence(S, T, reduction=reduction),
        lambda: kdloss.cross_entropy(S, Y, reduction=reduction),
    ]
    for call in calls:
        message = _raises(ValueError, call, "reduction")
        if reduction:
            assert reduction in message


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((3, 4), (3, 5)), ((3, 4), (4, 4)), ((3, 4), (12,)), ((2, 3, 4), (3, 2, 4)), ((4,), (5,))],
    ids=str,
)
def test_student_teacher_shape_mismatch(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]
) -> None:
    s = np.zeros(student_shape)
    t = np.zeros(teacher_shape)
    y = np.zeros(student_shape[:-1], dtype=np.int64)
    teacher_dims = r"[\(\[]" + r",\s*".join(str(d) for d in teacher_shape)
    calls: list[Callable[[], object]] = [
        lambda: kdloss.distillation_loss(s, t, y),
        lambda: kdloss.distillation_loss(s, t, alpha=1.0),
        lambda: kdloss.DistillationLoss()(s, t, y),
        lambda: kdloss.DistillationLoss().forward_backward(s, t, y),
        lambda: kdloss.kl_divergence(s, t),
    ]
    for call in calls:
        _raises(ValueError, call, "teacher", teacher_dims)


@pytest.mark.parametrize(
    ("logits_shape", "labels_shape"),
    [
        ((3, 4), (4,)),
        ((3, 4), (3, 1)),
        ((3, 4), ()),
        ((2, 3, 4), (6,)),
        ((4,), (1,)),
        ((3, 4), (2,)),
    ],
    ids=str,
)
def test_labels_of_the_wrong_shape(
    logits_shape: tuple[int, ...], labels_shape: tuple[int, ...]
) -> None:
    s = np.zeros(logits_shape)
    y = np.zeros(labels_shape, dtype=np.int64)
    calls: list[Callable[[], object]] = [
        lambda: kdloss.distillation_loss(s, s, y),
        lambda: kdloss.DistillationLoss(alpha=1.0)(s, s, y),
        lambda: kdloss.DistillationLoss().forward_backward(s, s, y),
        lambda: kdloss.cross_entropy(s, y),
    ]
    for call in calls:
        _raises(ValueError, call, "labels")


@pytest.mark.parametrize("shape", [(3, 0), (0,), (0, 0), (2, 3, 0)], ids=str)
def test_no_classes(shape: tuple[int, ...]) -> None:
    x = np.zeros(shape)
    y = np.zeros(shape[:-1], dtype=np.int64)
    _raises(ValueError, lambda: kdloss.softmax(x), "x|logits")
    _raises(ValueError, lambda: kdloss.log_softmax(x), "x|logits")
    _raises(ValueError, lambda: kdloss.distillation_loss(x, x, y), "logits")
    _raises(ValueError, lambda: kdloss.DistillationLoss().forward_backward(x, x, y), "logits")
    _raises(ValueError, lambda: kdloss.kl_divergence(x, x), "logits")
    _raises(ValueError, lambda: kdloss.cross_entropy(x, y), "logits")


@pytest.mark.parametrize("value", [np.float64(1.5), np.array(2.0), 3.0, np.float32(1.0)], ids=repr)
def test_zero_dimensional_logits(value: Any) -> None:
    _raises(ValueError, lambda: kdloss.softmax(value), "x|logits")
    _raises(ValueError, lambda: kdloss.log_softmax(value), "x|logits")
    _raises(ValueError, lambda: kdloss.distillation_loss(value, value, 0), "logits")
    _raises(ValueError, lambda: kdloss.distillation_loss(value, value, alpha=1.0), "logits")
    _raises(
        ValueError, lambda: kdloss.DistillationLoss().forward_backward(value, value, 0), "logits"
    )
    _raises(ValueError, lambda: kdloss.kl_divergence(value, value), "logits")
    _raises(ValueError, lambda: kdloss.cross_entropy(value, 0), "logits")


# ---------------------------------------------------------------------------------------------
# label values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_label", "ignore_index"),
    [(4, -100), (5, -100), (-1, -100), (-100, -1), (-101, -100), (10**12, -100), (2**62, 0)],
    ids=str,
)
def test_label_out_of_range(bad_label: int, ignore_index: int) -> None:
    y = np.array([0, bad_label, 1], dtype=np.int64)
    value = re.escape(str(bad_label))
    calls: list[Callable[[], object]] = [
        lambda: kdloss.distillation_loss(S, T, y, ignore_index=ignore_index),
        lambda: kdloss.distillation_loss(S, T, y, alpha=1.0, ignore_index=ignore_index),
        lambda: kdloss.DistillationLoss(ignore_index=ignore_index)(S, T, y),
        lambda: kdloss.DistillationLoss(ignore_index=ignore_index).forward_backward(S, T, y),
        lambda: kdloss.cross_entropy(S, y, ignore_index=ignore_index),
    ]
    for call in calls:
        _raises(ValueError, call, "label", value)


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (2**63, np.uint64),
        (2**64 - 1, np.uint64),
        (2**63 - 1, np.int64),
        (-(2**63), np.int64),
        (2**32 - 1, np.uint32),
        (2**31 - 1, np.int32),
        (255, np.uint8),
        (-128, np.int8),
    ],
    ids=str,
)
def test_huge_labels(value: int, dtype: Any) -> None:
    y = np.array([0, value, 1], dtype=dtype)
    calls: list[Callable[[], object]] = [
        lambda: kdloss.distillation_loss(S, T, y),
        lambda: kdloss.DistillationLoss().forward_backward(S, T, y),
        lambda: kdloss.cross_entropy(S, y),
    ]
    for call in calls:
        _raises(ValueError, call, "label")


@pytest.mark.parametrize("value", [2**64, 2**70, -(2**63) - 1, -(10**30)], ids=str)
def test_python_int_labels_beyond_64_bits(value: int) -> None:
    # np.asarray makes an object array of these; they are still integer labels out of range.
    x = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])
    _raises(ValueError, lambda: kdloss.cross_entropy(x, [0, value]), "label")
    _raises(ValueError, lambda: kdloss.distillation_loss(x, x, [value, 1]), "label")
    _raises(ValueError, lambda: kdloss.cross_entropy(x[0], value), "label")


def test_scalar_label_out_of_range() -> None:
    x = np.array([1.0, 2.0, 3.0])
    _raises(ValueError, lambda: kdloss.cross_entropy(x, 3), "label", "3")
    _raises(ValueError, lambda: kdloss.distillation_loss(x, x, -5), "label", "-5")
    _raises(ValueError, lambda: kdloss.distillation_loss(x, x, np.uint64(2**64 - 1)), "label")


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.999])
def test_labels_none_needs_alpha_one(alpha: float) -> None:
    _raises(ValueError, lambda: kdloss.distillation_loss(S, T, alpha=alpha), "labels")
    _raises(ValueError, lambda: kdloss.distillation_loss(S, T, None, alpha=alpha), "labels")
    _raises(ValueError, lambda: kdloss.DistillationLoss(alpha=alpha)(S, T), "labels")
    _raises(ValueError, lambda: kdloss.DistillationLoss(alpha=alpha).forward(S, T), "labels")
    _raises(
        ValueError, lambda: kdloss.DistillationLoss(alpha=alpha).forward_backward(S, T), "labels"
    )


# ---------------------------------------------------------------------------------------------
# types
# ---------------------------------------------------------------------------------------------

NON_REAL = [
    np.array([[1 + 2j, 0.5]]),
    np.array([[1.0, 2.0]], dtype=np.complex64),
    np.array([[1.0, 2.0]], dtype=object),
    np.array([["a", "b"]]),
    [["a", "b"]],
    np.array([[b"a", b"b"]]),
    np.array([["2020-01-01", "2020-01-02"]], dtype="datetime64[D]"),
]


@pytest.mark.parametrize("bad", NON_REAL, ids=lambda a: str(np.asarray(a).dtype))
def test_non_real_logits(bad: Any) -> None:
    good = np.zeros((1, 2))
    y = np.array([0])
    _raises(TypeError, lambda: kdloss.softmax(bad), "x|logits")
    _raises(TypeError, lambda: kdloss.log_softmax(bad), "x|logits")
    _raises(TypeError, lambda: kdloss.distillation_loss(bad, good, y), "student_logits")
    _raises(TypeError, lambda: kdloss.distillation_loss(good, bad, y), "teacher_logits")
    _raises(TypeError, lambda: kdloss.DistillationLoss()(bad, good, y), "student_logits")
    _raises(
        TypeError,
        lambda: kdloss.DistillationLoss().forward_backward(good, bad, y),
        "teacher_logits",
    )
    _raises(TypeError, lambda: kdloss.kl_divergence(bad, good), "student_logits")
    _raises(TypeError, lambda: kdloss.kl_divergence(good, bad), "teacher_logits")
    _raises(TypeError, lambda: kdloss.cross_entropy(bad, y), "logits")


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0.0, 1.0, 1.0]),
        [0.0, 1.0, 1.0],
        np.array([0, 1, 1], dtype=np.float32),
        np.array(["0", "1", "1"]),
        np.array([0.0, 1.0, 1.0], dtype=object),
        np.array([0, 1, 1], dtype=np.complex128),
    ],
    ids=lambda a: str(np.asarray(a).dtype),
)
def test_non_integer_labels(bad: Any) -> None:
    _raises(TypeError, lambda: kdloss.distillation_loss(S, T, bad), "labels")
    _raises(TypeError, lambda: kdloss.DistillationLoss().forward_backward(S, T, bad), "labels")
    _raises(TypeError, lambda: kdloss.cross_entropy(S, bad), "labels")


def test_non_integer_scalar_label() -> None:
    x = np.array([1.0, 2.0, 3.0])
    _raises(TypeError, lambda: kdloss.cross_entropy(x, 1.0), "labels")
    _raises(TypeError, lambda: kdloss.distillation_loss(x, x, 0.5), "labels")


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("n", [0, -1, -(2**40), 1025, 2**40, 2**70, -(2**70)])
def test_set_num_threads_out_of_range(n: int) -> None:
    before = kdloss.get_num_threads()
    _raises(ValueError, lambda: kdloss.set_num_threads(n), r"thread|\bn\b", re.escape(str(n)))
    assert kdloss.get_num_threads() == before


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("n", [np.int64(2), np.uint8(1), np.int32(3)])
def test_set_num_threads_takes_numpy_integers(n: Any) -> None:
    kdloss.set_num_threads(n)
    assert kdloss.get_num_threads() == int(n)


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("n", [2.0, "2", None, True, np.bool_(True), np.float64(2)])
def test_set_num_threads_refuses_other_types(n: Any) -> None:
    before = kdloss.get_num_threads()
    _raises(TypeError, lambda: kdloss.set_num_threads(n), r"\bn\b")
    assert kdloss.get_num_threads() == before


# ---------------------------------------------------------------------------------------------
# masked arrays: their masks would be lost
# ---------------------------------------------------------------------------------------------


def test_masked_logits_are_refused() -> None:
    masked = np.ma.masked_array(S, mask=S > 1)
    for call in (
        lambda: kdloss.distillation_loss(masked, T, Y),
        lambda: kdloss.softmax(masked),
        lambda: kdloss.cross_entropy(masked, Y),
    ):
        _raises(TypeError, call, "student_logits|logits|x", "masked", "filled")
    _raises(TypeError, lambda: kdloss.kl_divergence(S, masked), "teacher_logits", "masked")


def test_masked_labels_are_refused() -> None:
    masked = np.ma.masked_array(Y, mask=[True, False, False])
    _raises(TypeError, lambda: kdloss.distillation_loss(S, T, masked), "labels", "masked")
    _raises(TypeError, lambda: kdloss.cross_entropy(S, masked), "labels", "masked")


# ---------------------------------------------------------------------------------------------
# nothing is left half-done
# ---------------------------------------------------------------------------------------------


def test_errors_leave_inputs_untouched() -> None:
    s = S.copy()
    t = T.copy()
    y = np.array([0, 9, 1])
    _raises(ValueError, lambda: kdloss.DistillationLoss().forward_backward(s, t, y), "label")
    np.testing.assert_array_equal(s, S)
    np.testing.assert_array_equal(t, T)
    # The library still works afterwards.
    assert np.isfinite(kdloss.distillation_loss(s, t, Y))
