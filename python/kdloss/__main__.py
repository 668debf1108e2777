"""The command line: ``python -m kdloss bench [options]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return the exit status.

    With no command, print the usage and return 0.
    """
    parser = argparse.ArgumentParser(
        prog="python -m kdloss",
        description="kdloss: exact, fused knowledge-distillation loss and gradient for NumPy.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="time kdloss against NumPy, pure Python and PyTorch (if installed)",
        description=(
            "Time kdloss's forward_backward and forward on seeded synthetic float32 logits "
            "(T=2, alpha=0.5) against the NumPy float64 reference, a hand-written NumPy "
            "float32 formulation, pure Python (small shapes only) and PyTorch when it is "
            "installed. kdloss is first checked against the reference. Prints a table of "
            "median times and speed-ups; progress goes to stderr."
        ),
    )
    # Imported here so that the usage prints even where the benchmark's imports would fail.
    from kdloss.bench import cli

    cli.add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
