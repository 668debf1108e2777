"""Arrays from other frameworks: DLPack exporters are read in place, devices other than the CPU
are refused by name, ``__array__`` objects are converted; real PyTorch tensors and JAX arrays
where those are installed."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import kdloss
import numpy as np
import numpy.typing as npt
import pytest
from helpers import framework, labels, logits
from kdloss._arrays import as_array

Arr = npt.NDArray[Any]


class Exporter:
    """An array that NumPy can only reach through DLPack, as a framework's tensor is; its
    device is whatever it is told to report."""

    def __init__(self, a: Arr, device: tuple[int, int] = (1, 0)) -> None:
        self.array = a
        self.device_code = device

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device_code


class ArrayOnly:
    """An object that only has ``__array__``."""

    def __init__(self, a: Arr) -> None:
        self.array = a

    def __array__(self, dtype: Any = None, copy: Any = None) -> Arr:
        return self.array if dtype is None else self.array.astype(dtype)


def _calls(s: Any, t: Any, y: Any) -> list[Any]:
    """Every public entry point on these inputs, in a fixed order."""
    kd = kdloss.DistillationLoss(2.0, 0.3, reduction="none")
    loss, grad = kd.forward_backward(s, t, y)
    return [
        loss,
        grad,
        kd(s, t, y),
        kd.forward(s, t, y),
        kdloss.distillation_loss(s, t, y, temperature=0.5, alpha=0.7),
        *kdloss.distillation_loss_and_grad(s, t, y, reduction="sum"),
        kdloss.kl_divergence(s, t, temperature=2.0),
        kdloss.cross_entropy(s, y, reduction="none"),
        kdloss.softmax(s, temperature=2.0),
        kdloss.log_softmax(t),
    ]


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w)
        if isinstance(w, np.ndarray):
            assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


LAYOUTS: dict[str, Callable[[Arr], Arr]] = {
    "contiguous": lambda a: a,
    "fortran": np.asfortranarray,
    "column_strided": lambda a: np.repeat(a, 2, axis=-1)[:, ::2],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exporter_is_read_in_place(rng: np.random.Generator, dtype: Any, layout: str) -> None:
    a = LAYOUTS[layout](logits(rng, (5, 9), dtype))
    got = as_array(Exporter(a), "x")
    assert np.shares_memory(got, a)
    assert got.dtype == a.dtype
    assert got.shape == a.shape
    assert got.strides == a.strides


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_exporters_give_the_results_of_arrays(rng: np.random.Generator, dtype: Any) -> None:
    s = logits(rng, (6, 11), dtype)
    t = logits(rng, (6, 11), dtype)
    y = labels(rng, (6,), 11)
    want = _calls(s, t, y)
    _assert_same(_calls(Exporter(s), Exporter(t), Exporter(y)), want)
    _assert_same(_calls(ArrayOnly(s), ArrayOnly(t), ArrayOnly(y)), want)


def test_exporter_inputs_are_not_copied() -> None:
    """The loss of DLPack inputs allocates nothing of their size (tracemalloc sees NumPy's
    buffers, so a conversion would show in the peak)."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((256, 2048)).astype(np.float32)
    t = rng.standard_normal((256, 2048)).astype(np.float32)
    y = rng.integers(0, 2048, size=256)
    kd = kdloss.DistillationLoss(2.0, 0.5)
    kd(Exporter(s), Exporter(t), Exporter(y))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        kd(Exporter(s), Exporter(t), Exporter(y))
        kdloss.kl_divergence(Exporter(s), Exporter(t))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < s.nbytes // 8, peak


def _imports_writeable() -> bool:
    """Whether this NumPy's DLPack imports are writeable: NumPy 1.23 makes every one read-only,
    NumPy 2.4 keeps the exporter's flag."""
    return bool(np.from_dlpack(Exporter(np.zeros(1))).flags.writeable)


def test_exporter_as_out_receives_the_gradient(rng: np.random.Generator) -> None:
    s = logits(rng, (4, 7), np.float32)
    t = logits(rng, (4, 7), np.float32)
    y = labels(rng, (4,), 7)
    want_loss, want_grad = kdloss.distillation_loss_and_grad(s, t, y)
    buf = np.full_like(s, np.nan)
    if not _imports_writeable():
        with pytest.raises(ValueError, match="out must be writeable"):
            kdloss.distillation_loss_and_grad(s, t, y, out=Exporter(buf))
        return
    loss, grad = kdloss.distillation_loss_and_grad(s, t, y, out=Exporter(buf))
    assert loss == want_loss
    assert np.shares_memory(grad, buf)
    np.testing.assert_array_equal(buf, want_grad)
    loss, grad = kdloss.DistillationLoss().forward_backward(s, t, y, out=Exporter(buf))
    assert np.shares_memory(grad, buf)


def test_read_only_exporter_as_out_is_refused(rng: np.random.Generator) -> None:
    s = logits(rng, (4, 7), np.float32)
    buf = np.empty_like(s)
    buf.flags.writeable = False
    # NumPy 1.23 refuses to export a read-only array at all.
    with pytest.raises((ValueError, TypeError), match=r"^out (must be writeable|of dtype)"):
        kdloss.distillation_loss_and_grad(s, s, None, alpha=1.0, out=Exporter(buf))


def test_out_that_would_be_a_copy_is_refused(rng: np.random.Generator) -> None:
    """An ``__array__`` object or a list as ``out`` would receive nothing: refused."""
    s = logits(rng, (2, 3), np.float32)
    for out in (ArrayOnly(np.empty_like(s)), np.empty_like(s).tolist()):
        with pytest.raises(TypeError, match="out"):
            kdloss.distillation_loss_and_grad(s, s, None, alpha=1.0, out=out)


# DLPack device types: CUDA (2), ROCm (10), oneAPI (14).
@pytest.mark.parametrize(
    ("code", "shown"), [((2, 0), "cuda:0"), ((10, 1), "rocm:1"), ((14, 0), "oneapi:0")]
)
def test_exporter_on_another_device_is_refused(
    rng: np.random.Generator, code: tuple[int, int], shown: str
) -> None:
    s = logits(rng, (3, 4), np.float32)
    y = labels(rng, (3,), 4)
    far = Exporter(s, device=code)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("student_logits", lambda: kdloss.distillation_loss(far, s, y)),
        ("teacher_logits", lambda: kdloss.DistillationLoss()(s, far, y)),
        ("labels", lambda: kdloss.distillation_loss(s, s, Exporter(y, device=code))),
        ("out", lambda: kdloss.distillation_loss_and_grad(s, s, y, out=far)),
        ("logits", lambda: kdloss.cross_entropy(far, y)),
        ("x", lambda: kdloss.softmax(far)),
    ]
    for name, call in calls:
        with pytest.raises(TypeError, match=rf"^{name} is on device {shown}\b.*CPU.*\.cpu\(\)"):
            call()


def test_masked_arrays_are_still_refused() -> None:
    masked = np.ma.masked_array(np.zeros((2, 3)), mask=[[True, False, False]] * 2)
    with pytest.raises(TypeError, match="masked"):
        kdloss.softmax(masked)


# ---------------------------------------------------------------------------------------------
# PyTorch tensors and JAX arrays
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def torch() -> Any:
    return framework("torch")


@pytest.fixture
def jnp() -> Any:
    return framework("jax.numpy")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_torch_tensors_are_read_in_place(torch: Any, dtype: str) -> None:
    x = torch.randn(5, 9, dtype=getattr(torch, dtype))
    for view in (x, x.t(), x[:, ::2]):
        got = as_array(view, "x")
        assert np.shares_memory(got, x.numpy())
        np.testing.assert_array_equal(got, view.numpy())


def test_torch_tensors_give_the_results_of_arrays(torch: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.float16):
        s = torch.randn(6, 11, generator=gen).to(dtype)
        t = torch.randn(6, 11, generator=gen).to(dtype)
        y = torch.randint(0, 11, (6,), generator=gen)
        y[2] = -100
        _assert_same(_calls(s, t, y), _calls(s.numpy(), t.numpy(), y.numpy()))
        # Transposed: strided rows, read in place as NumPy reads a Fortran-order array.
        s, t = s.reshape(11, 6).t(), t.reshape(11, 6).t()
        _assert_same(_calls(s, t, y), _calls(s.numpy(), t.numpy(), y.numpy()))


def test_torch_bfloat16_is_widened_exactly(torch: Any) -> None:
    # Values of every sign and size, infinities and NaN: bfloat16 to float32 is exact.
    x = torch.tensor([0.0, -0.0, 1.5, -3.25, 1e30, -1e-30, float("inf"), -float("inf")])
    x = torch.cat([x, torch.randn(40) * 100]).to(torch.bfloat16).reshape(6, 8)
    for view in (x, x.t(), x[:, 1::3]):
        got = as_array(view, "x")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, view.float().numpy())
    nan = as_array(torch.full((2,), float("nan"), dtype=torch.bfloat16), "x")
    assert np.isnan(nan).all()
    s = x.float().clamp(-50, 50).to(torch.bfloat16)
    want = kdloss.distillation_loss(s.float(), s.flip(0).float(), None, alpha=1.0)
    assert kdloss.distillation_loss(s, s.flip(0), None, alpha=1.0) == want


def test_torch_out_receives_the_gradient(torch: Any) -> None:
    s = torch.randn(4, 7)
    y = torch.tensor([0, 6, -100, 3])
    out = torch.full_like(s, float("nan"))
    _, grad = kdloss.distillation_loss_and_grad(s, s.flip(0), y, out=out)
    assert np.shares_memory(grad, out.numpy())
    want = kdloss.distillation_loss_and_grad(s.numpy(), s.flip(0).numpy(), y.numpy())[1]
    np.testing.assert_array_equal(out.numpy(), want)
    with pytest.raises(TypeError, match="out is a bfloat16 tensor"):
        kdloss.distillation_loss_and_grad(s, s, y, out=out.bfloat16())


def test_torch_errors(torch: Any) -> None:
    s = torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"^student_logits is on device meta\b.*\.cpu\(\)"):
        kdloss.distillation_loss(s.to("meta"), s, None, alpha=1.0)
    with pytest.raises(TypeError, match=r"^teacher_logits requires grad; pass .*detach\(\)"):
        kdloss.distillation_loss(s, s.clone().requires_grad_(), None, alpha=1.0)
    with pytest.raises(TypeError, match=r"^x of dtype torch.float8_e4m3fn cannot be read"):
        kdloss.softmax(s.to(torch.float8_e4m3fn))
    with pytest.raises(TypeError, match="labels must hold integers"):
        kdloss.cross_entropy(s, torch.zeros(3))


def test_jax_arrays(jnp: Any) -> None:
    rng = np.random.default_rng(5)
    s = logits(rng, (6, 11), np.float32)
    t = logits(rng, (6, 11), np.float32)
    y = labels(rng, (6,), 11).astype(np.int32)
    js, jt, jy = jnp.asarray(s), jnp.asarray(t), jnp.asarray(y)
    view = as_array(js, "x")
    assert np.shares_memory(view, np.asarray(js))
    np.testing.assert_array_equal(view, s)
    _assert_same(_calls(js, jt, jy), _calls(s, t, y))
