"""Array arguments from any framework as NumPy arrays, read in place where the layout allows.

NumPy arrays are used as they are; PyTorch CPU tensors through ``Tensor.numpy()``; other
objects with ``__dlpack__`` (JAX CPU arrays, ...) through :func:`numpy.from_dlpack`; anything
else through :func:`numpy.asarray` (``__array__``, sequences). PyTorch is never imported here:
a tensor can only exist once the caller has imported it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["as_array", "as_out", "require_cpu"]

# DLPack's DLDeviceType values (dlpack.h), for naming the device of an array that is not on
# the CPU.
_DEVICE_TYPES = {
    1: "cpu",
    2: "cuda",
    3: "cuda_host",
    4: "opencl",
    7: "vulkan",
    8: "metal",
    9: "vpi",
    10: "rocm",
    11: "rocm_host",
    12: "ext_dev",
    13: "cuda_managed",
    14: "oneapi",
    15: "webgpu",
    16: "hexagon",
    17: "maia",
}
_CPU = 1


def _torch_tensor(x: object) -> Any:
    """``x`` if it is a PyTorch tensor, else ``None``. A tensor exists only once torch has
    been imported, so torch's entry in ``sys.modules`` is all this needs."""
    torch = sys.modules.get("torch")
    return x if torch is not None and isinstance(x, torch.Tensor) else None


def _off_cpu(name: str, device: str) -> TypeError:
    return TypeError(
        f"{name} is on device {device}; kdloss computes on the CPU: move it there first, "
        f"e.g. {name}.cpu()"
    )


def require_cpu(x: Any, name: str) -> None:
    """Raise a ``TypeError`` naming ``name`` and its device if ``x`` (a PyTorch tensor or an
    object with ``__dlpack_device__``) is not in CPU memory."""
    if _torch_tensor(x) is not None:
        # A tensor's own device name covers the devices DLPack has no code for (meta, mps).
        if x.device.type != "cpu":
            raise _off_cpu(name, str(x.device))
        return
    device_type, index = (int(v) for v in x.__dlpack_device__())
    if device_type != _CPU:
        kind = _DEVICE_TYPES.get(device_type, "unknown")
        raise _off_cpu(name, f"{kind}:{index} (DLPack device type {device_type})")


def _from_torch(x: Any, name: str) -> NDArray[Any]:
    """A CPU tensor's memory as a NumPy array: ``Tensor.numpy()``, the view
    :func:`numpy.from_dlpack` gives, at a fifth of its cost (torch's ``__dlpack__`` is Python).
    bfloat16, which NumPy does not have, is read through an int16 view and widened to float32
    (bfloat16 is the top half of a float32)."""
    require_cpu(x, name)
    if x.requires_grad:
        raise TypeError(
            f"{name} requires grad; pass {name}.detach(), or use "
            "kdloss.torch.DistillationLoss to backpropagate through the loss"
        )
    torch = sys.modules["torch"]
    try:
        if x.dtype == torch.bfloat16:
            bits: NDArray[np.uint16] = x.view(torch.int16).numpy().view(np.uint16)
            return np.left_shift(bits.astype(np.uint32), 16).view(np.float32)
        return np.asarray(x.numpy())
    except (TypeError, RuntimeError) as e:
        # torch's refusal: a dtype NumPy has no match for, a conjugate or negative view.
        raise TypeError(f"{name} of dtype {x.dtype} cannot be read as an array: {e}") from None


def as_array(x: object, name: str) -> NDArray[Any]:
    """``x`` as a NumPy array, without a copy where its layout allows.

    A tensor or array on another device is a ``TypeError`` saying to move it to the CPU; a
    PyTorch tensor that requires grad is a ``TypeError`` too (these functions do not record a
    graph: ``kdloss.torch.DistillationLoss`` does).
    """
    if type(x) is np.ndarray:
        return x
    if isinstance(x, np.ndarray):
        return np.asarray(x)
    tensor = _torch_tensor(x)
    if tensor is not None:
        return _from_torch(tensor, name)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        require_cpu(x, name)
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError) as e:
            # The exporter's refusal (a dtype DLPack has no code for, a conjugate view, a
            # read-only array older NumPy will not export).
            dtype = getattr(x, "dtype", "?")
            raise TypeError(f"{name} of dtype {dtype} cannot be read through DLPack: {e}") from None
    return np.asarray(x)


def as_out(x: object) -> object:
    """An ``out`` argument: a tensor as the NumPy view of its memory, anything else as it is,
    for the binding to check (converting it would copy, and the gradient written into the copy
    would be lost)."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return x
    tensor = _torch_tensor(x)
    if tensor is not None and tensor.dtype == sys.modules["torch"].bfloat16:
        raise TypeError("out is a bfloat16 tensor, which cannot hold a float32 gradient in place")
    return as_array(x, "out")
