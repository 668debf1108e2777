"""kdloss: exact, fused knowledge-distillation loss and gradient on NumPy arrays.

The loss is Hinton's ``alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))
+ (1 - alpha) * CE(student, labels)``, computed by Rust kernels that make one fused pass set
over each row, in parallel over rows, with the GIL released.

Environment variables read at import: ``KDLOSS_NUM_THREADS`` (threads; default one per core)
and ``KDLOSS_SIMD`` (``scalar``, ``avx2`` or ``avx512`` on x86-64, ``scalar`` or ``neon`` on
aarch64: force an instruction-set level).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from . import _core, reference
from .components import Components
from .functional import (
    DIVERGENCES,
    _is_int,
    cross_entropy,
    distillation_loss,
    distillation_loss_and_grad,
    divergence,
    kl_divergence,
    log_softmax,
    softmax,
)
from .loss import DistillationLoss

__all__ = [
    "DIVERGENCES",
    "Components",
    "DistillationLoss",
    "__version__",
    "build_info",
    "cross_entropy",
    "distillation_loss",
    "distillation_loss_and_grad",
    "divergence",
    "empty_cache",
    "get_num_threads",
    "kl_divergence",
    "log_softmax",
    "reference",
    "set_num_threads",
    "softmax",
    "threads",
]

__version__: str = _core.__version__


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 to 1024; any integer type) for later calls. Results do not depend
    on ``n``."""
    if not _is_int(n):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    _core.set_num_threads(int(n))


class threads:
    """Use ``n`` threads (1 to 1024; any integer type) for the calls made inside a ``with``
    block, on this OS thread only.

    Other threads, and this one after the block, keep their thread count, also when the block
    raises. Blocks nest: the innermost count applies. Inside one, :func:`get_num_threads`
    returns ``n``. Results do not depend on ``n``. Meant for code that runs kdloss from several
    threads, or inside a scheduler's worker, and must bound it without touching the others.
    """

    __slots__ = ("_n", "_saved")

    def __init__(self, n: int) -> None:
        if not _is_int(n):
            raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
        # Checked now, as set_num_threads checks it, not when the block is entered.
        self._n = _core.check_num_threads(int(n))
        # The counts this object replaced, per OS thread (an object may be entered by several).
        self._saved = threading.local()

    def __enter__(self) -> None:
        stack: list[int | None] = self._saved.__dict__.setdefault("stack", [])
        stack.append(_core.swap_local_threads(self._n))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _core.swap_local_threads(self._saved.stack.pop())

    def __repr__(self) -> str:
        return f"kdloss.threads({self._n})"


def empty_cache() -> None:
    """Free the output buffers kept for reuse.

    Gradients and softmax outputs of 8 MiB or more that Python has freed are kept (up to four,
    64 MiB in all) and handed out again for the next output of the same size, which then costs
    no page faults. This gives that memory back to the system.
    """
    _core.empty_cache()


def get_num_threads() -> int:
    """The number of threads calls from this thread use: ``n`` inside ``with threads(n)``, else
    the process's count (:func:`set_num_threads`, ``KDLOSS_NUM_THREADS``, else one per
    core)."""
    return _core.get_num_threads()


def build_info() -> dict[str, Any]:
    """Facts about this build: ``version``, ``simd`` (the level in use), ``simd_available``,
    ``threads``, ``target_arch`` and ``lanes``."""
    return dict(_core.build_info())
