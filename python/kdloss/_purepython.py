"""The distillation loss and its gradient in plain Python: lists of floats and :mod:`math`.

This is the slow peer of ``python -m kdloss bench``: what the computation costs without NumPy
or native code. It follows the semantics of :func:`kdloss.distillation_loss` with
``reduction="mean"``: per row ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) *
CE(s, label)``, the cross-entropy at temperature 1, averaged over the rows whose label is not
``ignore_index``. Log-probabilities are computed as ``(x - max) - log(sum)``, so nothing is
clamped, and a class where the teacher has no mass contributes nothing to the KL term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["distillation_loss", "distillation_loss_and_grad"]


class _Row:
    """Log-sum-exp statistics of one row of logits scaled by ``scale``.

    ``shifted`` is ``row * scale - max``, ``exps`` its exponentials, ``total`` their sum and
    ``log_total`` its log. A row whose maximum is NaN, +inf or -inf (every class masked) has no
    distribution: everything is NaN, so any loss that uses it is NaN, never a finite number.
    """

    __slots__ = ("exps", "log_total", "shifted", "total")

    def __init__(self, row: Sequence[float], scale: float) -> None:
        scaled = [x * scale for x in row] if scale != 1.0 else list(row)
        top = max(scaled)
        if not math.isfinite(top):
            self.shifted = [math.nan] * len(scaled)
            self.exps = self.shifted
            self.total = self.log_total = math.nan
            return
        self.shifted = [x - top for x in scaled]
        self.exps = [math.exp(z) for z in self.shifted]
        self.total = sum(self.exps)
        self.log_total = math.log(self.total)

    def probs(self) -> list[float]:
        """``softmax(row * scale)``."""
        inv = 1.0 / self.total
        return [e * inv for e in self.exps]


def _kl(teacher: _Row, student: _Row) -> float:
    """``sum p_t * (log p_t - log p_s)``, skipping classes where ``p_t == 0`` (0 * log 0 = 0)."""
    inv_t = 1.0 / teacher.total
    log_t = teacher.log_total
    log_s = student.log_total
    kl = 0.0
    for e, zt, zs in zip(teacher.exps, teacher.shifted, student.shifted):
        if e != 0.0:
            kl += e * inv_t * ((zt - log_t) - (zs - log_s))
    return kl


def _check(
    student_rows: Sequence[Sequence[float]],
    teacher_rows: Sequence[Sequence[float]],
    labels: Sequence[int] | None,
    temperature: float,
    alpha: float,
) -> None:
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if len(student_rows) != len(teacher_rows):
        raise ValueError(
            "student_rows and teacher_rows differ in length: "
            f"{len(student_rows)} != {len(teacher_rows)}"
        )
    if labels is None:
        if alpha < 1.0:
            raise ValueError(f"labels may be None only when alpha == 1, got alpha={alpha!r}")
    elif len(labels) != len(student_rows):
        raise ValueError(
            f"labels has length {len(labels)}, expected one per row ({len(student_rows)})"
        )


def _row_label(
    i: int,
    s_row: Sequence[float],
    t_row: Sequence[float],
    labels: Sequence[int] | None,
    ignore_index: int,
    use_ce: bool,
) -> int | None:
    """The label of row ``i`` (-1 when there are none), or ``None`` if the row is ignored."""
    if len(s_row) != len(t_row) or not s_row:
        raise ValueError(
            f"row {i}: student has {len(s_row)} classes, teacher {len(t_row)} (need >= 1)"
        )
    if labels is None:
        return -1
    label = int(labels[i])
    if label == ignore_index:
        return None
    if use_ce and not 0 <= label < len(s_row):
        raise ValueError(f"labels[{i}] = {label} is outside [0, {len(s_row)})")
    return label


def distillation_loss_and_grad(
    student_rows: Sequence[Sequence[float]],
    teacher_rows: Sequence[Sequence[float]],
    labels: Sequence[int] | None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    *,
    ignore_index: int = -100,
) -> tuple[float, list[list[float]]]:
    """Mean distillation loss over the rows and its gradient with respect to the student.

    Args:
        student_rows: student logits, one sequence of ``C`` floats per row.
        teacher_rows: teacher logits, same shape as ``student_rows``.
        labels: one class index per row, or ``None`` when ``alpha == 1``.
        temperature: softening temperature ``T`` of both distributions in the KL term.
        alpha: weight of the ``T**2``-scaled KL term; ``1 - alpha`` weights the cross-entropy.
        ignore_index: a label with this value excludes its row from the loss and the mean.

    Returns:
        ``(loss, grad)``: the loss as a float and ``d loss / d student_rows`` as a list of rows.
        An ignored row gets a zero gradient; the loss is 0.0 when no row counts.
    """
    _check(student_rows, teacher_rows, labels, temperature, alpha)
    use_kl = alpha != 0.0
    use_ce = alpha != 1.0
    inv_temp = 1.0 / temperature
    counted: list[tuple[int, float, list[float]]] = []
    for i, (s_row, t_row) in enumerate(zip(student_rows, teacher_rows)):
        label = _row_label(i, s_row, t_row, labels, ignore_index, use_ce)
        if label is None:
            continue
        loss_row = 0.0
        grad_row = [0.0] * len(s_row)
        student = _Row(s_row, inv_temp) if use_kl else None
        if student is not None:
            teacher = _Row(t_row, inv_temp)
            loss_row += alpha * temperature * temperature * _kl(teacher, student)
            w = alpha * temperature
            grad_row = [w * (q - p) for q, p in zip(student.probs(), teacher.probs())]
        if use_ce:
            plain = student if student is not None and inv_temp == 1.0 else _Row(s_row, 1.0)
            w = 1.0 - alpha
            loss_row += w * (plain.log_total - plain.shifted[label])
            grad_row = [g + w * q for g, q in zip(grad_row, plain.probs())]
            grad_row[label] -= w
        counted.append((i, loss_row, grad_row))

    grad = [[0.0] * len(s_row) for s_row in student_rows]
    if not counted:
        return 0.0, grad
    inv_count = 1.0 / len(counted)
    total = 0.0
    for i, loss_row, grad_row in counted:
        total += loss_row
        grad[i] = [g * inv_count for g in grad_row]
    return total * inv_count, grad


def distillation_loss(
    student_rows: Sequence[Sequence[float]],
    teacher_rows: Sequence[Sequence[float]],
    labels: Sequence[int] | None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    *,
    ignore_index: int = -100,
) -> float:
    """Mean distillation loss over the rows, without the gradient.

    Same arguments and semantics as :func:`distillation_loss_and_grad`; only the per-row
    log-sum-exp statistics are built, no probabilities.
    """
    _check(student_rows, teacher_rows, labels, temperature, alpha)
    use_kl = alpha != 0.0
    use_ce = alpha != 1.0
    inv_temp = 1.0 / temperature
    total = 0.0
    count = 0
    for i, (s_row, t_row) in enumerate(zip(student_rows, teacher_rows)):
        label = _row_label(i, s_row, t_row, labels, ignore_index, use_ce)
        if label is None:
            continue
        count += 1
        if use_kl:
            kl = _kl(_Row(t_row, inv_temp), _Row(s_row, inv_temp))
            total += alpha * temperature * temperature * kl
        if use_ce:
            plain = _Row(s_row, 1.0)
            total += (1.0 - alpha) * (plain.log_total - plain.shifted[label])
    return total / count if count else 0.0
