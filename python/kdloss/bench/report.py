"""What a run prints and writes: numbers formatted for tables, aligned-text and Markdown
tables, the lower bound of each loss call, and the JSON record of everything measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .console import plural
from .machine import Limits
from .workloads import LOSS_BYTES, LOSS_EXPS, MODES, Impl, ShapeResult

__all__ = [
    "bound_formula",
    "fmt_bound",
    "fmt_ms",
    "fmt_ns",
    "fmt_ratio",
    "format_table",
    "loss_bound_s",
    "peer_cell",
    "render_table",
    "to_json",
]


def bound_formula(threads: int) -> str:
    """How the ``bound`` column is computed, in words."""
    return (
        f"bound = max(bytes/element x elements / stream bandwidth, exps/element x elements x "
        f"exp cost / {plural(threads, 'thread')}); forward + backward: "
        f"{LOSS_BYTES['forward_backward']} B and {LOSS_EXPS['forward_backward']} exps per "
        f"element, forward: {LOSS_BYTES['forward']} B and {LOSS_EXPS['forward']} exps; "
        f"x bound = kdloss median / bound."
    )


def _tiered(value: float, suffix: str = "", small: str = ".2f") -> str:
    """``value`` with fewer decimals as it grows: 0 from 100, 1 from 10, else ``small``."""
    if value >= 100:
        return f"{value:.0f}{suffix}"
    if value >= 10:
        return f"{value:.1f}{suffix}"
    return f"{value:{small}}{suffix}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return _tiered(ms) if ms >= 1 else f"{ms:#.3g}"


def fmt_ns(ns: float) -> str:
    return _tiered(ns)


def fmt_ratio(ratio: float) -> str:
    return _tiered(ratio, "x")


def fmt_bound(ratio: float) -> str:
    """kdloss's time as a multiple of the lower bound."""
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False
) -> str:
    """Rows of cells as aligned text (first column left-aligned, the rest right-aligned, a rule
    under the header) or, with ``markdown``, as a Markdown table."""
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    table = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def peer_cell(theirs: float | None, ours: float | None) -> str:
    """A peer's median (ms) and, in parentheses, how many times faster kdloss is."""
    if theirs is None:
        return "—"
    if ours is None or ours <= 0:
        return fmt_ms(theirs)
    return f"{fmt_ms(theirs)} ({fmt_ratio(theirs / ours)})"


def loss_bound_s(limits: Limits, elements: int, mode: str, threads: int) -> float:
    """The lower bound of one loss call (``mode``) over ``elements`` logits on ``threads``."""
    return limits.bound_s(elements, LOSS_BYTES[mode], LOSS_EXPS[mode], threads)


def format_table(
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    mode: str,
    limits: Limits | None = None,
    threads: int = 1,
    *,
    markdown: bool = False,
) -> str:
    """A table of medians (ms) and kdloss's speed-up over each peer; with ``limits``, the lower
    bound of each call and kdloss's time as a multiple of it."""
    peers = [impl for impl in impls if impl.key != "kdloss"]
    header = ["shape", "kdloss", "ns/element"]
    if limits is not None:
        header += ["bound", "x bound"]
    header += [impl.title for impl in peers]
    rows: list[list[str]] = []
    for res in results:
        ours = res.timings["kdloss"][mode].median_s
        row = [res.case.name]
        if ours is None:
            row += ["—", "—"]
        else:
            row += [fmt_ms(ours), fmt_ns(ours * 1e9 / res.case.elements)]
        if limits is not None:
            bound = loss_bound_s(limits, res.case.elements, mode, threads)
            row += [fmt_ms(bound), "—" if ours is None else fmt_bound(ours / bound)]
        for impl in peers:
            row.append(peer_cell(res.timings[impl.key][mode].median_s, ours))
        rows.append(row)
    return render_table(header, rows, markdown=markdown)


def to_json(
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    machine: dict[str, Any],
    config: dict[str, Any],
    check: dict[str, Any],
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Everything measured: raw times, medians and speed-ups per shape, mode and implementation,
    and the lower bounds with the probes they come from."""
    threads = int(config.get("threads", 1))
    shapes = []
    for res in results:
        per_impl: dict[str, Any] = {}
        for impl in impls:
            per_mode: dict[str, Any] = {}
            for mode in MODES:
                timing = res.timings[impl.key][mode]
                med = timing.median_s
                first = timing.first_median_s
                ours = res.timings["kdloss"][mode].median_s
                per_mode[mode] = {
                    "times_s": timing.times_s,
                    "median_ms": None if med is None else med * 1e3,
                    "first_call_times_s": timing.first_s,
                    "first_call_median_ms": None if first is None else first * 1e3,
                    "ns_per_element": None if med is None else med * 1e9 / res.case.elements,
                    "kdloss_speedup": None if med is None or not ours else med / ours,
                    "skipped": timing.skipped,
                }
            per_impl[impl.key] = {"title": impl.title, **per_mode}
        entry: dict[str, Any] = {
            "shape": [res.case.rows, res.case.classes],
            "elements": res.case.elements,
            "implementations": per_impl,
        }
        if limits is not None:
            bounds = {}
            for mode in MODES:
                bound = loss_bound_s(limits, res.case.elements, mode, threads)
                ours = res.timings["kdloss"][mode].median_s
                bounds[mode] = {
                    "bound_ms": bound * 1e3,
                    "bytes_per_element": LOSS_BYTES[mode],
                    "exps_per_element": LOSS_EXPS[mode],
                    "kdloss_x_of_bound": None if ours is None else ours / bound,
                }
            entry["bound"] = bounds
        shapes.append(entry)
    out = {"machine": machine, "config": config, "check": check, "results": shapes}
    if limits is not None:
        out["limits"] = limits.to_json()
    return out
