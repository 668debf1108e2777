"""What a run shows on the terminal: the status line on stderr, the error that ends a run with
a message, and counts written out in words."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

__all__ = ["BenchError", "Progress", "plural"]


class BenchError(Exception):
    """A condition that ends the benchmark with a message and a non-zero exit status."""


class Progress:
    """One status line on stderr, rewritten in place on a terminal.

    Elsewhere (a log file, CI) only milestones are printed, one line each.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.width = 0
        self.last = 0.0

    def update(self, text: str, *, milestone: bool = False) -> None:
        """Show ``text`` as the current status (at most ~10 times a second on a terminal)."""
        if not self.live:
            if milestone:
                print(text, file=self.stream, flush=True)
            return
        now = time.monotonic()
        if not milestone and now - self.last < 0.1:
            return
        self.last = now
        # Longer than the terminal, the line would wrap and "\r" could not rewrite it.
        text = text[: max(20, shutil.get_terminal_size().columns - 1)]
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        """Remove the status line."""
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
