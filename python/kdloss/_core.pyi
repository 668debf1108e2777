from typing import Any, Optional, Union

import numpy as np
from numpy.typing import NDArray

__version__: str

_Loss = Union[float, NDArray[np.floating[Any]]]

def distillation(
    student: NDArray[np.floating[Any]],
    teacher: NDArray[np.floating[Any]],
    labels: Optional[NDArray[np.int64]],
    temperature: float,
    alpha: float,
    reduction: str,
    ignore_index: int,
    with_grad: bool,
    out: Optional[NDArray[np.floating[Any]]] = None,
) -> tuple[_Loss, Optional[NDArray[np.floating[Any]]]]: ...
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
) -> _Loss: ...
def softmax(x: NDArray[np.floating[Any]], temperature: float, log: bool) -> NDArray[np.floating[Any]]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_simd(name: str) -> None: ...
def build_info() -> dict[str, Any]: ...
def validate(temperature: float, alpha: float, reduction: str) -> None: ...
