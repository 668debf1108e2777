from typing import Any, final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "OutputBuffer",
    "Settings",
    "__version__",
    "build_info",
    "cached_bytes",
    "check_num_threads",
    "cross_entropy",
    "distillation",
    "divergence",
    "empty_cache",
    "get_num_threads",
    "kl_divergence",
    "label_error",
    "probe_bandwidth",
    "probe_exp",
    "set_num_threads",
    "set_simd",
    "softmax",
    "swap_local_threads",
]
__version__: str

_Loss = float | NDArray[np.floating[Any]]

@final
class Settings:
    def __new__(
        cls,
        temperature: float,
        alpha: float,
        reduction: str,
        ignore_index: int,
        divergence: str = "forward_kl",
        beta: float = 0.5,
        skew: float = 0.1,
        t2_scale: bool = True,
        class_weight: NDArray[np.float64] | None = None,
        label_smoothing: float = 0.0,
    ) -> Settings: ...
    @property
    def label_smoothing(self) -> float: ...
    @property
    def class_weight(self) -> list[float] | None: ...
    @property
    def divergence(self) -> str: ...
    @property
    def beta(self) -> float: ...
    @property
    def skew(self) -> float: ...
    @property
    def t2_scale(self) -> bool: ...
    @property
    def temperature(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def reduction(self) -> str: ...
    @property
    def ignore_index(self) -> int: ...

def distillation(
    settings: Settings,
    student: NDArray[np.floating[Any]],
    teacher: NDArray[np.floating[Any]],
    labels: NDArray[np.int64] | None = None,
    with_grad: bool = False,
    out: object = None,
    mask: NDArray[np.bool_] | None = None,
    normalizer: float | tuple[float, float] | None = None,
    components: bool = False,
) -> tuple[Any, NDArray[np.floating[Any]] | None]: ...
def divergence(
    student: NDArray[np.floating[Any]],
    teacher: NDArray[np.floating[Any]],
    kind: str,
    temperature: float,
    beta: float,
    skew: float,
    reduction: str,
    mask: NDArray[np.bool_] | None = None,
    normalizer: float | None = None,
) -> _Loss: ...
def kl_divergence(
    student: NDArray[np.floating[Any]],
    teacher: NDArray[np.floating[Any]],
    temperature: float,
    reduction: str,
) -> _Loss: ...
def cross_entropy(
    logits: NDArray[np.floating[Any]],
    labels: NDArray[np.int64],
    reduction: str,
    ignore_index: int,
    mask: NDArray[np.bool_] | None = None,
    normalizer: float | None = None,
    class_weight: NDArray[np.float64] | None = None,
    label_smoothing: float = 0.0,
) -> _Loss: ...
def softmax(
    x: NDArray[np.floating[Any]], temperature: float, log: bool
) -> NDArray[np.floating[Any]]: ...
def set_num_threads(n: int) -> None: ...
def check_num_threads(n: int) -> int: ...
def swap_local_threads(n: int | None) -> int | None: ...
def get_num_threads() -> int: ...
def set_simd(name: str) -> None: ...
def build_info() -> dict[str, Any]: ...
def label_error(classes: int, ignore_index: int, got: str) -> str: ...
def probe_bandwidth(megabytes: int = 256, threads: int = 1, reps: int = 7) -> float: ...
def probe_exp(reps: int = 21) -> float: ...
def empty_cache() -> None: ...
def cached_bytes() -> int: ...

@final
class OutputBuffer: ...
