"""Array arguments from any framework as NumPy arrays, read in place where the layout allows.

NumPy arrays are used as they are; objects with ``__dlpack__`` (PyTorch CPU tensors, JAX CPU
arrays, CuPy's host arrays, ...) are viewed through :func:`numpy.from_dlpack`; anything else
goes through :func:`numpy.asarray` (``__array__``, sequences). PyTorch is never imported here:
a tensor is recognised by its type's module and its dtype's name.
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


def require_cpu(x: Any, name: str) -> None:
    """Raise a ``TypeError`` naming ``name`` and its device if ``x`` (a PyTorch tensor or an
    object with ``__dlpack_device__``) is not in CPU memory."""
    if _is_torch_tensor(x):
        # A tensor's own device name covers the devices DLPack has no code for (meta, mps).
        if x.device.type == "cpu":
            return
        shown = str(x.device)
    else:
        device_type, index = (int(v) for v in x.__dlpack_device__())
        if device_type == _CPU:
            return
        kind = _DEVICE_TYPES.get(device_type, "unknown")
        shown = f"{kind}:{index} (DLPack device type {device_type})"
    raise TypeError(
        f"{name} is on device {shown}; kdloss computes on the CPU: move it there first, "
        f"e.g. {name}.cpu()"
    )


def _is_torch_tensor(x: object) -> bool:
    return any(c.__name__ == "Tensor" and c.__module__ == "torch" for c in type(x).__mro__)


def _is_bfloat16(x: Any) -> bool:
    return _is_torch_tensor(x) and str(x.dtype) == "torch.bfloat16"


def _from_torch_bfloat16(x: Any) -> NDArray[np.float32]:
    """A bfloat16 tensor's values as float32: DLPack and NumPy have no bfloat16, so its bits
    are read through an int16 view and widened (bfloat16 is the top half of a float32)."""
    torch = sys.modules["torch"]
    bits = np.from_dlpack(x.view(torch.int16)).view(np.uint16)
    return np.left_shift(bits.astype(np.uint32), 16).view(np.float32)


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
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        require_cpu(x, name)
        if _is_torch_tensor(x):
            t: Any = x
            if t.requires_grad:
                raise TypeError(
                    f"{name} requires grad; pass {name}.detach(), or use "
                    "kdloss.torch.DistillationLoss to backpropagate through the loss"
                )
            if _is_bfloat16(t):
                return _from_torch_bfloat16(t)
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError) as e:
            # The exporter's refusal (a dtype DLPack has no code for, a conjugate view).
            dtype = getattr(x, "dtype", "?")
            raise TypeError(f"{name} of dtype {dtype} cannot be read through DLPack: {e}") from None
    return np.asarray(x)


def as_out(x: object) -> object:
    """An ``out`` argument: a DLPack tensor as the NumPy view of its memory, anything else as
    it is, for the binding to check (converting it would copy, and the gradient written into
    the copy would be lost)."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return x
    if _is_bfloat16(x):
        raise TypeError("out is a bfloat16 tensor, which cannot hold a float32 gradient in place")
    return as_array(x, "out")
