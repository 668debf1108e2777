"""The public API: names, signatures, DistillationLoss, return types and dtypes."""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import pickle
from typing import Any

import kdloss
import numpy as np
import pytest
from helpers import computed_dtype, labels, logits
from kdloss import reference

PUBLIC_NAMES = [
    "DistillationLoss",
    "distillation_loss",
    "softmax",
    "log_softmax",
    "kl_divergence",
    "cross_entropy",
    "set_num_threads",
    "get_num_threads",
]
PUBLIC_MODULES = ["reference"]
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_names_exist_and_are_documented(name: str) -> None:
    obj = getattr(kdloss, name)
    assert callable(obj)
    assert obj.__doc__
    assert obj.__doc__.strip()


def test_all_lists_the_public_names() -> None:
    exported = set(getattr(kdloss, "__all__", PUBLIC_NAMES))
    assert set(PUBLIC_NAMES) <= exported
    assert set(PUBLIC_MODULES) <= exported
    for name in exported:
        assert hasattr(kdloss, name)


def test_the_reference_is_an_attribute_after_import_kdloss() -> None:
    assert kdloss.reference is reference
    assert callable(kdloss.reference.distillation_loss)


@pytest.mark.parametrize(
    "name",
    [
        "softmax",
        "log_softmax",
        "kl_divergence",
        "cross_entropy",
        "distillation_loss",
        "distillation_loss_and_grad",
    ],
)
def test_reference_functions_are_documented(name: str) -> None:
    fn = getattr(reference, name)
    assert fn.__doc__
    assert fn.__doc__.strip()


def test_version() -> None:
    assert isinstance(kdloss.__version__, str)
    assert kdloss.__version__ == importlib.metadata.version("kdloss")
    assert kdloss.__version__[0].isdigit()


# ---------------------------------------------------------------------------------------------
# keyword-only options
# ---------------------------------------------------------------------------------------------


def test_keyword_only_options() -> None:
    s = np.zeros((2, 3))
    y = np.array([0, 1])
    with pytest.raises(TypeError):
        kdloss.distillation_loss(s, s, y, 2.0)
    with pytest.raises(TypeError):
        kdloss.softmax(s, 2.0)
    with pytest.raises(TypeError):
        kdloss.log_softmax(s, 2.0)
    with pytest.raises(TypeError):
        kdloss.kl_divergence(s, s, 2.0)
    with pytest.raises(TypeError):
        kdloss.cross_entropy(s, y, "sum")
    with pytest.raises(TypeError):
        kdloss.DistillationLoss(2.0, 0.5, "sum")


def test_signatures_show_the_options() -> None:
    params = inspect.signature(kdloss.distillation_loss).parameters
    assert list(params)[:3] == ["student_logits", "teacher_logits", "labels"]
    assert params["labels"].default is None
    for name, default in [
        ("temperature", 1.0),
        ("alpha", 0.5),
        ("reduction", "mean"),
        ("ignore_index", -100),
    ]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default == default
    init = inspect.signature(kdloss.DistillationLoss).parameters
    assert init["temperature"].default == 1.0
    assert init["alpha"].default == 0.5
    assert init["reduction"].kind is inspect.Parameter.KEYWORD_ONLY
    assert init["ignore_index"].default == -100


def test_positional_arguments_work() -> None:
    s = np.array([[1.0, 2.0, 0.5]])
    t = np.array([[0.0, 1.0, 2.0]])
    y = np.array([2])
    by_keyword = kdloss.distillation_loss(
        student_logits=s, teacher_logits=t, labels=y, temperature=2.0, alpha=0.25
    )
    assert kdloss.distillation_loss(s, t, y, temperature=2.0, alpha=0.25) == by_keyword
    assert kdloss.DistillationLoss(2.0, 0.25)(s, t, y) == pytest.approx(by_keyword, rel=1e-12)
    assert kdloss.DistillationLoss(temperature=2.0, alpha=0.25)(
        student_logits=s, teacher_logits=t, labels=y
    ) == pytest.approx(by_keyword, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# DistillationLoss
# ---------------------------------------------------------------------------------------------


def test_defaults() -> None:
    loss_fn = kdloss.DistillationLoss()
    assert loss_fn.temperature == 1.0
    assert loss_fn.alpha == 0.5
    assert loss_fn.reduction == "mean"
    assert loss_fn.ignore_index == -100


def test_attributes() -> None:
    loss_fn = kdloss.DistillationLoss(3, 1, reduction="sum", ignore_index=7)
    assert loss_fn.temperature == 3.0
    assert isinstance(loss_fn.temperature, float)
    assert loss_fn.alpha == 1.0
    assert isinstance(loss_fn.alpha, float)
    assert loss_fn.reduction == "sum"
    assert isinstance(loss_fn.reduction, str)
    assert loss_fn.ignore_index == 7
    assert isinstance(loss_fn.ignore_index, int)


@pytest.mark.parametrize(
    ("name", "value"),
    [("temperature", 5.0), ("alpha", 0.1), ("reduction", "sum"), ("ignore_index", 3)],
)
def test_attributes_are_read_only(name: str, value: Any) -> None:
    loss_fn = kdloss.DistillationLoss(2.0, 0.5)
    before = getattr(loss_fn, name)
    with pytest.raises(AttributeError):
        setattr(loss_fn, name, value)
    with pytest.raises(AttributeError):
        delattr(loss_fn, name)
    assert getattr(loss_fn, name) == before
    # A new attribute cannot smuggle in a different configuration either.
    s = np.array([[1.0, 2.0, 0.5]])
    y = np.array([0])
    assert loss_fn(s, s + 1, y) == kdloss.distillation_loss(s, s + 1, y, temperature=2.0, alpha=0.5)


def test_repr_shows_the_parameters() -> None:
    text = repr(kdloss.DistillationLoss(2.5, 0.25, reduction="sum", ignore_index=-7))
    assert "DistillationLoss" in text
    for fragment in ("temperature", "2.5", "alpha", "0.25", "reduction", "sum", "ignore_index"):
        assert fragment in text
    assert "-7" in text
    default = repr(kdloss.DistillationLoss())
    assert "1.0" in default or "temperature=1" in default
    assert "mean" in default
    assert "-100" in default


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(rng: np.random.Generator, protocol: int) -> None:
    loss_fn = kdloss.DistillationLoss(3.5, 0.75, reduction="none", ignore_index=2)
    clone = pickle.loads(pickle.dumps(loss_fn, protocol=protocol))
    assert type(clone) is kdloss.DistillationLoss
    assert clone is not loss_fn
    for name in ("temperature", "alpha", "reduction", "ignore_index"):
        assert getattr(clone, name) == getattr(loss_fn, name)
    assert repr(clone) == repr(loss_fn)
    s = logits(rng, (5, 8))
    t = logits(rng, (5, 8))
    y = np.array([0, 2, 7, 2, 1])
    want_loss, want_grad = loss_fn.forward_backward(s, t, y)
    got_loss, got_grad = clone.forward_backward(s, t, y)
    np.testing.assert_array_equal(got_loss, want_loss)
    np.testing.assert_array_equal(got_grad, want_grad)
    assert got_loss[1] == 0.0  # ignore_index survived the round trip


def test_copy_and_deepcopy() -> None:
    loss_fn = kdloss.DistillationLoss(2.0, 0.3, reduction="sum", ignore_index=5)
    for clone in (copy.copy(loss_fn), copy.deepcopy(loss_fn)):
        assert repr(clone) == repr(loss_fn)
        assert clone.ignore_index == 5


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_call_forward_and_forward_backward_agree(rng: np.random.Generator, reduction: str) -> None:
    shape = (6, 3, 10)
    s = logits(rng, shape)
    t = logits(rng, shape)
    y = labels(rng, shape[:-1], shape[-1])
    loss_fn = kdloss.DistillationLoss(2.0, 0.6, reduction=reduction)
    called = loss_fn(s, t, y)
    forwarded = loss_fn.forward(s, t, y)
    result = loss_fn.forward_backward(s, t, y)
    assert isinstance(result, tuple)
    assert len(result) == 2
    loss, grad = result
    np.testing.assert_array_equal(called, forwarded)
    np.testing.assert_allclose(loss, called, rtol=1e-12, atol=1e-14)
    function = kdloss.distillation_loss(s, t, y, temperature=2.0, alpha=0.6, reduction=reduction)
    np.testing.assert_allclose(function, called, rtol=1e-12, atol=1e-14)
    assert grad.shape == shape


def test_forward_backward_without_labels_for_alpha_one() -> None:
    s = np.array([[1.0, 2.0, 0.5]])
    t = np.array([[0.0, 1.0, 2.0]])
    loss_fn = kdloss.DistillationLoss(2.0, 1.0)
    loss, grad = loss_fn.forward_backward(s, t)
    assert loss == pytest.approx(loss_fn(s, t), rel=1e-12)
    assert loss == pytest.approx(4.0 * kdloss.kl_divergence(s, t, temperature=2.0), rel=1e-12)
    assert grad.shape == s.shape


# ---------------------------------------------------------------------------------------------
# Return types and dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 3, 6)], ids=str)
def test_reduction_return_types(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: Any
) -> None:
    s = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y: Any = labels(rng, shape[:-1], shape[-1], ignore_fraction=0.0)
    if y.ndim == 0:
        y = int(y)
    for reduction in ("mean", "sum"):
        results = [
            kdloss.distillation_loss(s, t, y, reduction=reduction),
            kdloss.DistillationLoss(reduction=reduction)(s, t, y),
            kdloss.DistillationLoss(reduction=reduction).forward_backward(s, t, y)[0],
            kdloss.kl_divergence(s, t, reduction=reduction),
            kdloss.cross_entropy(s, y, reduction=reduction),
        ]
        for value in results:
            assert type(value) is float, type(value)
    results = [
        kdloss.distillation_loss(s, t, y, reduction="none"),
        kdloss.DistillationLoss(reduction="none")(s, t, y),
        kdloss.DistillationLoss(reduction="none").forward_backward(s, t, y)[0],
        kdloss.kl_divergence(s, t, reduction="none"),
        kdloss.cross_entropy(s, y, reduction="none"),
    ]
    for value in results:
        assert isinstance(value, np.ndarray), type(value)
        assert value.shape == shape[:-1]
        assert value.dtype == dtype


DTYPE_RULES = [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float32),
    (np.float16, np.float32, np.float32),
    (np.float32, np.float16, np.float32),
    (np.float16, np.float64, np.float64),
    (np.int64, np.int64, np.float64),
    (np.int32, np.int32, np.float64),
    (np.uint8, np.uint8, np.float64),
    (np.int64, np.float64, np.float64),
    (np.int64, np.float32, np.float64),
    (np.float32, np.int16, np.float64),
]


@pytest.mark.parametrize(
    ("student_dtype", "teacher_dtype", "expected"),
    DTYPE_RULES,
    ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b, _ in DTYPE_RULES],
)
def test_output_dtype_rules(
    rng: np.random.Generator, student_dtype: Any, teacher_dtype: Any, expected: Any
) -> None:
    assert computed_dtype(student_dtype, teacher_dtype) == expected
    shape = (3, 5)
    s = np.abs(logits(rng, shape, student_dtype))
    t = np.abs(logits(rng, shape, teacher_dtype))
    y = np.array([0, 4, 2])
    loss, grad = kdloss.DistillationLoss(reduction="none").forward_backward(s, t, y)
    assert loss.dtype == expected
    assert grad.dtype == expected
    assert kdloss.distillation_loss(s, t, y, reduction="none").dtype == expected
    assert kdloss.kl_divergence(s, t, reduction="none").dtype == expected
    # Single-input functions follow the dtype of their one input.
    single = computed_dtype(student_dtype)
    assert kdloss.softmax(s).dtype == single
    assert kdloss.log_softmax(s).dtype == single
    assert kdloss.cross_entropy(s, y, reduction="none").dtype == single


def test_python_scalars_and_lists_compute_in_float64() -> None:
    assert kdloss.softmax([1.0, 2.0, 3.0]).dtype == np.float64
    assert kdloss.softmax([1, 2, 3]).dtype == np.float64
    assert kdloss.cross_entropy([[1.0, 2.0]], [0], reduction="none").dtype == np.float64


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_num_threads")
def test_set_and_get_num_threads() -> None:
    default = kdloss.get_num_threads()
    assert type(default) is int
    assert default >= 1
    for n in (1, 3, 2, 1):
        assert kdloss.set_num_threads(n) is None
        assert kdloss.get_num_threads() == n
        s = np.ones((2, 3))
        assert kdloss.distillation_loss(s, s, [0, 1]) == pytest.approx(np.log(3) / 2, rel=1e-12)
