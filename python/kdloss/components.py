"""The terms of a distillation loss, returned with ``return_components=True``."""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import numpy as np
from numpy.typing import NDArray

__all__ = ["Components"]

_Value = Union[float, NDArray[np.floating[Any]]]


class Components(NamedTuple):
    """A loss and the parts it is made of, all reduced as the loss is.

    For ``"mean"`` and ``"sum"`` every field is a number; for ``"none"`` each is an array of one
    value per row.

    Attributes:
        loss: the loss itself, ``alpha * [T**2] * divergence + (1 - alpha) * cross_entropy``.
        divergence: the divergence term, without ``alpha`` and ``T**2`` (0.0 when
            ``alpha == 0``, since it is then not computed).
        cross_entropy: the cross-entropy term, weighted by ``class_weight[label]``, without
            ``1 - alpha`` (0.0 when ``alpha == 1``).
        count: the number of counted rows (an int), or for ``"none"`` a boolean array saying
            which rows count.
        weight_sum: the sum of ``class_weight[label]`` over the counted rows (their number when
            there are no class weights; 0.0 without labels), or for ``"none"`` each row's
            weight (0 on rows that do not count). With ``count``, what a caller needs to build
            the ``normalizer`` of gradient accumulation: ``(count, weight_sum)`` summed over the
            micro-batches.
    """

    loss: _Value
    divergence: _Value
    cross_entropy: _Value
    # The field name the API asks for; it hides tuple.count, which a loss's parts do not need.
    count: int | NDArray[np.bool_]  # type: ignore[assignment]
    weight_sum: _Value
