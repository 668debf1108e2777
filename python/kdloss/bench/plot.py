"""The optional chart of ``--plot``: time per element by shape, one line per implementation
and the lower bound dashed. matplotlib is imported only when a chart is asked for."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

from .console import BenchError
from .machine import Limits
from .report import loss_bound_s
from .workloads import ALPHA, MODE_TITLES, MODES, TEMPERATURE, Impl, ShapeResult

__all__ = ["load_pyplot", "write_plot"]


def load_pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise BenchError(
            "--plot needs matplotlib, an optional extra: pip install 'kdloss[plot]' "
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def write_plot(
    path: str,
    results: Sequence[ShapeResult],
    impls: Sequence[Impl],
    machine: dict[str, Any],
    limits: Limits | None = None,
) -> None:
    """Save a chart of nanoseconds per element by shape, one line per implementation, and the
    lower bound as a dashed line when ``limits`` are given."""
    plt = load_pyplot()
    fig, axes = plt.subplots(1, len(MODES), figsize=(12, 5), sharey=True)
    names = [r.case.name for r in results]
    markers = "osD^v<>"
    for ax, mode in zip(axes, MODES):
        for n, impl in enumerate(impls):
            # NaN where an implementation was skipped, so that its line breaks there.
            ys = [
                math.nan if med is None else med * 1e9 / res.case.elements
                for res in results
                for med in [res.timings[impl.key][mode].median_s]
            ]
            ax.plot(
                range(len(results)),
                ys,
                marker=markers[n % len(markers)],
                color=f"C{n}",
                linewidth=2.5 if impl.key == "kdloss" else 1.5,
                label=impl.title,
            )
        if limits is not None:
            threads = int(machine["threads"])
            bound_ns = [
                loss_bound_s(limits, res.case.elements, mode, threads) * 1e9 / res.case.elements
                for res in results
            ]
            ax.plot(
                range(len(results)),
                bound_ns,
                linestyle="--",
                color="black",
                linewidth=1.0,
                label="lower bound",
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_xlabel("shape (rows x classes)")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, which="both", axis="y", alpha=0.3)
    axes[0].set_ylabel("time per element, ns (log scale; lower is faster)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(
        f"kdloss {machine['kdloss_version']} and peers: float32, T={TEMPERATURE:g}, "
        f"alpha={ALPHA:g}, {machine['threads']} thread(s); {machine['cpu_model']}",
        fontsize="medium",
    )
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)
