"""kdloss.torch.DistillationLoss against the same objective composed from torch.nn.functional:
values, autograd gradients, a training loop, no_grad, torch.compile and its errors."""

from __future__ import annotations

import importlib
import re
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

import kdloss
import numpy as np
import pytest
from helpers import framework

torch = framework("torch")
F = torch.nn.functional
# Imported once torch is known to be there: an import error is then a failure, not a skip.
kt = importlib.import_module("kdloss.torch")

Tensor = Any


def composed(
    s: Tensor,
    t: Tensor,
    y: Tensor | None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """The loss in plain PyTorch: ``alpha*T**2*KL(p_t || p_s) + (1-alpha)*CE``, per row, then
    reduced over the rows whose label is not ``ignore_index``."""
    c = s.shape[-1]
    s2, t2 = s.reshape(-1, c), t.reshape(-1, c)
    log_q = F.log_softmax(s2 / temperature, dim=-1)
    log_p = F.log_softmax(t2 / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    rows = alpha * temperature**2 * kl
    if y is None:
        counted = torch.ones(rows.shape, dtype=torch.bool)
    else:
        y2 = y.reshape(-1)
        counted = y2 != ignore_index
        if alpha < 1:
            ce = F.cross_entropy(s2, y2, reduction="none", ignore_index=ignore_index)
            rows = rows + (1 - alpha) * ce
    rows = torch.where(counted, rows, torch.zeros_like(rows))
    if reduction == "none":
        return rows.reshape(s.shape[:-1])
    total = rows.sum()
    if reduction == "sum":
        return total
    return total / counted.sum().clamp(min=1)


def _inputs(
    shape: tuple[int, ...], dtype: Any = None, seed: int = 0, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float32
    s = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    y = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    y.view(-1)[1::3] = ignore_index
    return s, t, y


def _grad_of(fn: Any, s: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    leaf = s.detach().clone().requires_grad_()
    loss = fn(leaf)
    (loss if weights is None else (loss * weights).sum()).backward()
    return loss.detach(), leaf.grad


TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_matches_torch_functional(
    dtype: Any, alpha: float, temperature: float, reduction: str, ignore_index: int
) -> None:
    s, t, y = _inputs((3, 5, 11), dtype, ignore_index=ignore_index)
    options = {"reduction": reduction, "ignore_index": ignore_index}
    kd = kt.DistillationLoss(temperature, alpha, **options)
    # For "none", a weight per row checks that the incoming gradient scales each row.
    weights = torch.rand(s.shape[:-1], dtype=dtype) + 0.5 if reduction == "none" else None
    loss, grad = _grad_of(lambda a: kd(a, t, y), s, weights)
    want_loss, want_grad = _grad_of(
        lambda a: composed(a, t, y, temperature, alpha, **options), s, weights
    )
    assert loss.dtype == grad.dtype == dtype
    assert loss.shape == want_loss.shape
    tol = TOL[dtype]
    torch.testing.assert_close(loss, want_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, want_grad, rtol=tol, atol=tol)


def composed_options(
    s: Tensor,
    t: Tensor,
    y: Tensor,
    mask: Tensor,
    divergence: str,
    t2_scale: bool,
    class_weight: Tensor,
    normalizer: tuple[float, float] | None,
    temperature: float = 2.0,
    alpha: float = 0.4,
) -> Tensor:
    """The options of issue #10 in plain PyTorch: either KL direction, with or without T²,
    class-weighted cross-entropy, a row mask, and a normaliser (else the weighted mean)."""
    c = s.shape[-1]
    s2, t2, y2, m2 = s.reshape(-1, c), t.reshape(-1, c), y.reshape(-1), mask.reshape(-1)
    log_q = F.log_softmax(s2 / temperature, dim=-1)
    log_p = F.log_softmax(t2 / temperature, dim=-1)
    if divergence == "forward_kl":
        div = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    else:
        div = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1)
    counted = m2 & (y2 != -100)
    ce = F.cross_entropy(s2, y2, weight=class_weight, reduction="none", ignore_index=-100)
    div = torch.where(counted, div, torch.zeros_like(div)).sum()
    ce = torch.where(counted, ce, torch.zeros_like(ce)).sum()
    if normalizer is None:
        weights = class_weight[torch.where(counted, y2, 0)]
        normalizer = (float(counted.sum()), float(torch.where(counted, weights, 0).sum()))
    scale = temperature**2 if t2_scale else 1.0
    return alpha * scale * div / normalizer[0] + (1 - alpha) * ce / normalizer[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("divergence", kdloss.DIVERGENCES)
@pytest.mark.parametrize("t2_scale", [True, False])
@pytest.mark.parametrize("normalizer", [None, (7.0, 3.5)])
def test_options_and_selections_match_torch_functional(
    dtype: Any, divergence: str, t2_scale: bool, normalizer: tuple[float, float] | None
) -> None:
    s, t, y = _inputs((3, 5, 11), dtype)
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(y.shape, generator=gen) < 0.7
    w = torch.rand(11, generator=gen, dtype=torch.float64).to(dtype) + 0.2
    kd = kt.DistillationLoss(
        2.0, 0.4, divergence=divergence, t2_scale=t2_scale, class_weight=w.double().numpy()
    )
    loss, grad = _grad_of(lambda a: kd(a, t, y, mask=mask, normalizer=normalizer), s)
    want_loss, want_grad = _grad_of(
        lambda a: composed_options(a, t, y, mask, divergence, t2_scale, w, normalizer), s
    )
    tol = TOL[dtype]
    torch.testing.assert_close(loss, want_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, want_grad, rtol=tol, atol=tol)
    # The components come back as tensors; the loss among them backpropagates.
    leaf = s.detach().clone().requires_grad_()
    parts = kd(leaf, t, y, mask=mask, normalizer=normalizer, return_components=True)
    assert type(parts) is kdloss.Components
    assert all(isinstance(v, torch.Tensor) for v in parts)
    assert int(parts.count) == int((mask & (y != -100)).sum())
    parts.loss.backward()
    torch.testing.assert_close(leaf.grad, want_grad, rtol=tol, atol=tol)


def test_gradcheck_float64() -> None:
    s, t, y = _inputs((4, 6), torch.float64)
    s.requires_grad_()
    for options in ({}, {"reduction": "none"}, {"reduction": "sum"}):
        kd = kt.DistillationLoss(1.7, 0.3, **options)
        assert torch.autograd.gradcheck(lambda a, kd=kd: kd(a, t, y), (s,))


def test_training_loop_matches_pure_torch() -> None:
    """Three SGD steps of an nn.Linear student give the parameters of the same loop with the
    loss composed in PyTorch."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16, 8, generator=gen)
    teacher_net = torch.nn.Linear(8, 10)
    targets = torch.randint(0, 10, (3, 16), generator=gen)
    targets[:, ::5] = -100

    def train(loss_fn: Any) -> list[Tensor]:
        torch.manual_seed(2)
        student = torch.nn.Linear(8, 10)
        opt = torch.optim.SGD(student.parameters(), lr=0.5)
        for step in range(3):
            with torch.no_grad():
                t = teacher_net(x[step])
            opt.zero_grad()
            loss_fn(student(x[step]), t, targets[step]).backward()
            opt.step()
        return [p.detach() for p in student.parameters()]

    kd = kt.DistillationLoss(2.0, 0.7)
    got = train(kd)
    want = train(lambda s, t, y: composed(s, t, y, 2.0, 0.7))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_no_gradient_is_computed_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    s, t, y = _inputs((4, 6))
    kd = kt.DistillationLoss(2.0, 0.5)
    want = kd(s, t, y)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a gradient was computed")

    monkeypatch.setattr(kdloss.DistillationLoss, "forward_backward", refuse)
    # The student does not require grad, then does but grad mode is off.
    assert kd(s, t, y).grad_fn is None
    with torch.no_grad():
        got = kd(s.requires_grad_(), t, y)
    assert got.grad_fn is None
    assert not got.requires_grad
    assert torch.equal(got, want)


@pytest.mark.parametrize("factor", [1.0, 3.0])
def test_backward_twice_gives_the_same_gradient(factor: float) -> None:
    """The saved gradient is not changed by a backward pass: by the scaling, or (with a factor
    of 1, where it is handed on as it is) by accumulation into ``.grad``."""
    s, t, y = _inputs((4, 6))
    s.requires_grad_()
    loss = kt.DistillationLoss(2.0, 0.5)(s, t, y) * factor
    (first,) = torch.autograd.grad(loss, s, retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    assert s.grad is not None
    torch.testing.assert_close(s.grad, 3 * first)
    _, want = _grad_of(lambda a: composed(a, t, y, 2.0) * factor, s)
    torch.testing.assert_close(first, want)


def test_second_derivatives_are_refused() -> None:
    """The saved gradient is a constant, so a second derivative through it would be silently
    0: differentiating the gradient is an error instead."""
    s, t, y = _inputs((4, 6))
    s.requires_grad_()
    w = torch.tensor(2.0, requires_grad=True)
    for scale, message in ((1.0, "does not require grad"), (w, "once_differentiable")):
        loss = kt.DistillationLoss()(s, t, y) * scale
        (grad,) = torch.autograd.grad(loss, s, create_graph=True)
        with pytest.raises(RuntimeError, match=message):
            grad.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_students(dtype: Any) -> None:
    """float16 and bfloat16 are computed in float32; loss and gradient come back in the
    student's dtype, the float32 results rounded once."""
    s, t, y = _inputs((5, 9), dtype)
    kd = kt.DistillationLoss(2.0, 0.5)
    loss, grad = _grad_of(lambda a: kd(a, t, y), s)
    want_loss, want_grad = _grad_of(lambda a: kd(a, t.float(), y), s.float())
    assert loss.dtype == grad.dtype == dtype
    assert torch.equal(loss, want_loss.to(dtype))
    assert torch.equal(grad, want_grad.to(dtype))


def test_gradient_has_the_students_dtype() -> None:
    s, t, y = _inputs((4, 6))
    loss, grad = _grad_of(lambda a: kt.DistillationLoss()(a, t.double(), y), s)
    assert loss.dtype == grad.dtype == torch.float32
    want_loss, want_grad = _grad_of(lambda a: composed(a.double(), t.double(), y), s)
    torch.testing.assert_close(loss, want_loss.float())
    torch.testing.assert_close(grad, want_grad.float())


def test_inputs_are_not_copied() -> None:
    """The loss of contiguous float32 tensors allocates no NumPy memory of their size."""
    s, t, y = _inputs((256, 2048))
    kd = kt.DistillationLoss(2.0, 0.5)
    kd(s, t, y)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        kd(s, t, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < s.numel() * 4 // 8, peak


def test_options_are_those_of_kdloss() -> None:
    kd = kt.DistillationLoss(3.0, 0.25, reduction="sum", ignore_index=7)
    assert kd.loss == kdloss.DistillationLoss(3.0, 0.25, reduction="sum", ignore_index=7)
    assert "temperature=3.0" in repr(kd)
    with pytest.raises(ValueError, match="temperature"):
        kt.DistillationLoss(-1.0)
    with pytest.raises(TypeError, match="reduction"):
        kt.DistillationLoss(reduction=1)


def test_errors() -> None:
    s, t, y = _inputs((3, 4))
    kd = kt.DistillationLoss()
    for args, name in (
        ((s.to("meta"), t, y), "student"),
        ((s, t.to("meta"), y), "teacher"),
        ((s, t, y.to("meta")), "labels"),
    ):
        with pytest.raises(TypeError, match=rf"^{name} is on device meta\b.*\.cpu\(\)"):
            kd(*args)
    with pytest.raises(ValueError, match=r"teacher requires grad.*constant.*detach\(\)"):
        kd(s.requires_grad_(), t.clone().requires_grad_(), y)
    with pytest.raises(ValueError, match="labels"):
        kd(s, t, y[:2])
    with pytest.raises(TypeError, match=r"^student must be a torch.Tensor, got ndarray"):
        kd(s.detach().numpy(), t, y)
    # A teacher or labels from NumPy are read as kdloss reads them.
    assert torch.equal(kd(s, t.numpy(), y.tolist()), kd(s, t, y))


class _CudaLike(torch.Tensor):  # type: ignore[misc]
    """A CPU tensor that says it is on the first CUDA device, as a CUDA tensor does."""

    @property
    def device(self) -> Any:
        return torch.device("cuda", 0)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)


def test_cuda_like_tensor_is_refused() -> None:
    s, t, y = _inputs((3, 4))
    cuda = s.as_subclass(_CudaLike)
    with pytest.raises(TypeError, match=r"^student is on device cuda:0; .*\.cpu\(\)"):
        kt.DistillationLoss()(cuda, t, y)
    with pytest.raises(TypeError, match=r"^student_logits is on device cuda:0; .*\.cpu\(\)"):
        kdloss.distillation_loss(cuda, t, y)


# ---------------------------------------------------------------------------------------------
# keywords pass through, whatever kdloss.DistillationLoss takes
# ---------------------------------------------------------------------------------------------


class Parts(NamedTuple):
    loss: Any
    extra: Any


def _recording(monkeypatch: pytest.MonkeyPatch, parts: bool = False) -> list[dict[str, Any]]:
    """Makes kdloss.DistillationLoss's calls accept and record any keywords (as one with more
    options does), returning ``Parts(loss, extra)`` in the loss's place with ``parts``."""
    seen: list[dict[str, Any]] = []
    forward_backward = kdloss.DistillationLoss.forward_backward
    forward = kdloss.DistillationLoss.forward

    def wrap(value: Any) -> Any:
        return Parts(value, np.float64(4.0)) if parts else value

    def fb(self: Any, s: Any, t: Any, y: Any = None, **kw: Any) -> Any:
        seen.append(kw)
        loss, grad = forward_backward(self, s, t, y)
        return wrap(loss), grad

    def fw(self: Any, s: Any, t: Any, y: Any = None, **kw: Any) -> Any:
        seen.append(kw)
        return wrap(forward(self, s, t, y))

    monkeypatch.setattr(kdloss.DistillationLoss, "forward_backward", fb)
    monkeypatch.setattr(kdloss.DistillationLoss, "forward", fw)
    return seen


def test_keywords_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    s, t, y = _inputs((3, 4))
    mask = torch.tensor([True, False, True])
    kd = kt.DistillationLoss()
    kd(s.requires_grad_(), t, y, mask=mask, normalizer=(2.0, 3.0))
    with torch.no_grad():
        kd(s, t, y, normalizer=5)
    assert seen[0]["normalizer"] == (2.0, 3.0)
    assert seen[0]["mask"] is mask
    assert seen[1] == {"normalizer": 5}


def test_components_come_back_as_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    _recording(monkeypatch, parts=True)
    s, t, y = _inputs((3, 4))
    s.requires_grad_()
    got = kt.DistillationLoss(2.0, 0.5)(s, t, y, return_parts=True)
    assert type(got) is Parts
    assert torch.equal(got.extra, torch.tensor(4.0, dtype=torch.float64))
    got.loss.backward()
    _, want = _grad_of(lambda a: composed(a, t, y, 2.0), s)
    torch.testing.assert_close(s.grad, want)


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_compile() -> Any:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_compile")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_function_gives_the_same_result(reduction: str) -> None:
    s, t, y = _inputs((6, 10))
    kd = kt.DistillationLoss(2.0, 0.4, reduction=reduction)

    def step(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        return kd(a * 2, b, c).sum() * 3

    compiled = torch.compile(step, fullgraph=True)
    for _ in range(2):
        loss, grad = _grad_of(lambda a: compiled(a, t, y), s)
        want_loss, want_grad = _grad_of(lambda a: step(a, t, y), s)
        torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, want_grad, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(compiled(s, t, y), step(s, t, y), rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("fresh_compile")
def test_compiled_module_in_a_model() -> None:
    torch.manual_seed(3)
    net = torch.nn.Linear(5, 7)
    kd = kt.DistillationLoss(2.0, 0.5)
    x, t, y = torch.randn(4, 5), torch.randn(4, 7), torch.tensor([0, 1, -100, 6])
    loss_fn = torch.compile(lambda: kd(net(x), t, y), fullgraph=True)
    loss_fn().backward()
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    composed(net(x), t, y, 2.0).backward()
    for g, p in zip(got, net.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.usefixtures("fresh_compile")
def test_compiled_keywords_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    s, t, y = _inputs((3, 4))
    mask = torch.tensor([True, False, True])
    kd = kt.DistillationLoss()
    plain = {"normalizer": (2.0, 3.0), "kind": "a|b)", "flag": True, "none": None}

    def call(a: Tensor) -> Tensor:
        return kd(a, t, y, mask=mask, **plain)

    compiled = torch.compile(call, fullgraph=True)
    loss = compiled(s.requires_grad_())
    loss.backward()
    assert seen[-1].pop("mask").tolist() == mask.tolist()
    assert seen[-1] == plain
    assert torch.equal(loss, call(s))


@pytest.mark.usefixtures("fresh_compile")
def test_compiled_keywords_must_be_tensors_or_literals(monkeypatch: pytest.MonkeyPatch) -> None:
    _recording(monkeypatch)
    s, t, y = _inputs((3, 4))
    kd = kt.DistillationLoss()
    compiled = torch.compile(lambda a: kd(a, t, y, weights=np.ones(3)))
    with pytest.raises(TypeError, match="tensors or Python literals"):
        compiled(s)


# opcheck's fake-tensor conversion reads .grad of the non-leaf copies it makes (torch's own).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_operator_registration() -> None:
    """The custom operator's schema, fake implementation and autograd registration, as
    torch.library.opcheck tests them."""
    s, t, y = _inputs((3, 5))

    def spec(*args: Any, **kwargs: Any) -> str:
        return kt.DistillationLoss(*args, **kwargs)._pickled + "|()"

    for args in (
        (s.requires_grad_(), t, y, [], spec(2.0, 0.5), True),
        (s, t, None, [], spec(1.0, 1.0), True),
        (s.detach(), t, y, [], spec(2.0, 0.5, reduction="none"), False),
    ):
        torch.library.opcheck(torch.ops.kdloss.distillation.default, args)


@pytest.mark.usefixtures("fresh_compile")
def test_readme_example_runs() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## PyTorch\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```python[ \t]*\n(.*?)^```", section, flags=re.DOTALL | re.M)
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
