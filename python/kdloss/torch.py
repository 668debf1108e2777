"""kdloss for PyTorch: :class:`DistillationLoss`, a ``torch.nn.Module`` that backpropagates.

Install with ``pip install "kdloss[torch]"`` (torch >= 2.4). Importing ``kdloss`` does not
import torch; importing ``kdloss.torch`` does.

The forward pass computes the loss and, when the student requires grad (and grad mode is on),
its gradient in the same fused call (:meth:`kdloss.DistillationLoss.forward_backward`); the
gradient is saved, and the backward pass only scales it by the incoming gradient. Contiguous
CPU tensors of float32 and float64 are read in place (as ``Tensor.numpy()`` views); float16
and bfloat16 are accepted (computed in float32). The gradient has the student's dtype; the
loss too. The saved gradient is a constant: there is no second derivative (outside
torch.compile, differentiating the gradient raises).

``torch.compile``: the module's computation is registered as the custom operator
``torch.ops.kdloss.distillation`` (``torch.library.custom_op``, with a fake implementation for
tracing and ``register_autograd`` for the backward pass), so a compiled function or model that
calls the module keeps it as one node of its graph, without a graph break. Its options are
constants of the graph: a module with other options, or other keyword values, compiles anew.
Keyword arguments of a compiled call must be tensors or Python literals (numbers, strings,
``None``, tuples of those), and a call whose loss is not a single tensor (per-term components)
runs only outside ``torch.compile``.

Example:
    >>> import torch, kdloss.torch
    >>> kd = kdloss.torch.DistillationLoss(temperature=2.0, alpha=0.5)
    >>> student = torch.zeros(2, 3, requires_grad=True)
    >>> loss = kd(student, torch.zeros(2, 3), torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(loss.item(), 6), student.grad.shape
    (0.549306, torch.Size([2, 3]))
"""

import ast
import functools
import pickle
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import loss as _loss
from ._arrays import require_cpu

__all__ = ["DistillationLoss"]


def _tensor(value: Any, dtype: torch.dtype) -> Tensor:
    """A loss value (a Python number or a NumPy array) as a tensor of ``dtype``, without a copy
    when it already has that dtype."""
    return torch.as_tensor(np.asarray(value)).to(dtype)


def _compute(
    loss: _loss.DistillationLoss,
    student: Tensor,
    teacher: Tensor,
    labels: Any,
    keywords: dict[str, Any],
    with_grad: bool,
) -> tuple[Any, Optional[Tensor]]:
    """The kdloss call itself: its loss as kdloss returns it, and, ``with_grad``, the gradient
    as a tensor of the student's dtype (the kdloss array itself when the dtypes agree)."""
    s = student.detach()
    if not with_grad:
        return loss.forward(s, teacher, labels, **keywords), None
    value, grad = loss.forward_backward(s, teacher, labels, **keywords)
    return value, torch.from_numpy(grad).to(student.dtype)


def _scale(grad: Tensor, grad_output: Tensor) -> Tensor:
    """The saved gradient times the incoming one; for ``"none"`` that holds one value per row,
    broadcast over the class axis."""
    return grad * grad_output.unsqueeze(-1)


class _Attach(torch.autograd.Function):
    """Gives a loss computed outside autograd the gradient computed with it."""

    @staticmethod
    def forward(ctx: Any, student: Tensor, loss: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return loss.view_as(loss)

    @staticmethod
    @once_differentiable  # the saved gradient is a constant: a second derivative would be 0
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        # loss.backward() passes a 1: the saved gradient is the answer as it is, without a
        # pass over it (autograd copies it before accumulating into it, since it is saved).
        if grad_output.numel() == 1 and grad_output.item() == 1:
            return grad, None, None
        return _scale(grad, grad_output), None, None


# ---------------------------------------------------------------------------------------------
# The custom operator, for torch.compile
# ---------------------------------------------------------------------------------------------
#
# An operator's arguments are tensors and a few plain types, so the loss object and the
# keywords that are not tensors travel as one string, the "spec": the pickled loss object, a
# "|", then the keywords as the text of a tuple of (name, value) pairs, with ``...`` as the
# value of a tensor keyword (the tensors follow, in that order, as the list argument). The
# string is a constant of the graph.


@functools.lru_cache(maxsize=64)
def _decode(spec: str) -> tuple[_loss.DistillationLoss, tuple[str, ...], dict[str, Any]]:
    """The loss object, the names of the tensor keywords and the other keywords of a spec."""
    head, _, text = spec.partition("|")
    try:
        pairs = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise TypeError(
            "the keywords of a torch.compile'd call must be tensors or Python literals "
            f"(numbers, strings, None, tuples of them), got {text}"
        ) from None
    names = tuple(name for name, value in pairs if value is Ellipsis)
    plain = {name: value for name, value in pairs if value is not Ellipsis}
    return pickle.loads(bytes.fromhex(head)), names, plain


@torch.library.custom_op("kdloss::distillation", mutates_args=(), device_types="cpu")
def _distillation(
    student: Tensor,
    teacher: Tensor,
    labels: Optional[Tensor],
    tensors: list[Tensor],
    spec: str,
    with_grad: bool,
) -> tuple[Tensor, Tensor]:
    loss, names, plain = _decode(spec)
    keywords = {**plain, **dict(zip(names, tensors))}
    value, grad = _compute(loss, student, teacher, labels, keywords, with_grad)
    if isinstance(value, tuple):
        raise TypeError(
            "a loss returned with its components is not a single tensor, which a "
            "torch.compile'd graph needs; make this call outside torch.compile"
        )
    if grad is None:
        grad = student.new_empty((0,))
    return _tensor(value, student.dtype), grad


@_distillation.register_fake
def _(
    student: Tensor,
    teacher: Tensor,
    labels: Optional[Tensor],
    tensors: list[Tensor],
    spec: str,
    with_grad: bool,
) -> tuple[Tensor, Tensor]:
    rows = student.shape[:-1] if _decode(spec)[0].reduction == "none" else ()
    grad = torch.empty_like(student) if with_grad else student.new_empty((0,))
    return student.new_empty(rows), grad


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.tensor_keywords = len(inputs[3])


def _backward(ctx: Any, grad_loss: Tensor, _grad_of_grad: Tensor) -> tuple[Any, ...]:
    # One entry per input, a list for the list of tensor keywords: only the student has one.
    (grad,) = ctx.saved_tensors
    return _scale(grad, grad_loss), None, None, [None] * ctx.tensor_keywords, None, None


_distillation.register_autograd(_backward, setup_context=_setup_context)


def _compiled(
    pickled: str,
    student: Tensor,
    teacher: Tensor,
    labels: Any,
    keywords: dict[str, Any],
    with_grad: bool,
) -> Tensor:
    fields = []
    tensors = []
    for name, value in keywords.items():
        if isinstance(value, Tensor):
            fields.append(f"({name!r}, ...)")
            tensors.append(value)
        else:
            fields.append(f"({name!r}, {value!r})")
    spec = pickled + "|(" + "".join(field + ", " for field in fields) + ")"
    if not isinstance(teacher, Tensor):
        teacher = torch.as_tensor(teacher)
    if labels is not None and not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    out: tuple[Tensor, Tensor] = _distillation(student, teacher, labels, tensors, spec, with_grad)
    return out[0]


# ---------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------


class DistillationLoss(torch.nn.Module):
    """Hinton's distillation loss as a ``torch.nn.Module``: :class:`kdloss.DistillationLoss`
    whose result backpropagates into the student.

    Takes exactly the arguments of :class:`kdloss.DistillationLoss` (``temperature``,
    ``alpha``, and the keyword-only ``reduction``, ``ignore_index`` and any other option it
    has), checked the same way; that object is :attr:`loss`.

    Example:
        >>> import torch, kdloss.torch
        >>> kd = kdloss.torch.DistillationLoss(2.0, 0.5, reduction="none")
        >>> student = torch.zeros(2, 3, requires_grad=True)
        >>> kd(student, torch.zeros(2, 3), torch.tensor([0, -100])).shape
        torch.Size([2])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.loss = _loss.DistillationLoss(*args, **kwargs)
        # What the custom operator needs of the options, built once (see _decode).
        self._pickled = pickle.dumps(self.loss).hex()

    def forward(
        self,
        student: Tensor,
        teacher: Tensor,
        labels: Optional[Tensor] = None,
        **keywords: Any,
    ) -> Any:
        """The loss of ``student`` against ``teacher`` (and ``labels``): a 0-d tensor for
        ``"mean"`` and ``"sum"``, a tensor of shape ``student.shape[:-1]`` for ``"none"``.

        Keyword arguments go to :meth:`kdloss.DistillationLoss.forward_backward` (or to
        ``forward`` when no gradient is needed) as they are. The gradient is computed only
        when grad mode is on and ``student`` requires grad. ``teacher`` is a constant: one that
        requires grad is a ``ValueError`` (pass ``teacher.detach()``). Tensors must be on the
        CPU. When the loss object returns per-term components in the loss's place, they come
        back the same way, as tensors, their loss field the one that backpropagates.
        """
        if not isinstance(student, Tensor):
            raise TypeError(f"student must be a torch.Tensor, got {type(student).__name__}")
        for name, value in (("student", student), ("teacher", teacher), ("labels", labels)):
            if isinstance(value, Tensor):
                require_cpu(value, name)
        if getattr(teacher, "requires_grad", False):
            raise ValueError(
                "teacher requires grad, but the teacher is a constant of the loss (no gradient "
                "flows into it); pass teacher.detach()"
            )
        with_grad = torch.is_grad_enabled() and student.requires_grad
        if torch.compiler.is_compiling():
            return _compiled(self._pickled, student, teacher, labels, keywords, with_grad)
        value, grad = _compute(self.loss, student, teacher, labels, keywords, with_grad)
        if isinstance(value, tuple):
            first, *rest = value
            fields = [self._loss_tensor(first, student, grad)]
            fields += [torch.as_tensor(np.asarray(v)) for v in rest]
            make = getattr(type(value), "_make", tuple)
            return make(fields)
        return self._loss_tensor(value, student, grad)

    @staticmethod
    def _loss_tensor(value: Any, student: Tensor, grad: Optional[Tensor]) -> Tensor:
        loss = _tensor(value, student.dtype)
        return loss if grad is None else _Attach.apply(student, loss, grad)

    def extra_repr(self) -> str:
        # The options, as kdloss.DistillationLoss shows them between its parentheses.
        return repr(self.loss).partition("(")[2][:-1]
