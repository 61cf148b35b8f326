"""A one-line progress bar for benchmarks: redrawn in place on a terminal, a line every few
seconds otherwise (logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, label: str, total: int, out: TextIO = sys.stderr) -> None:
        self.label, self.total, self.out = label, max(1, total), out
        self.started = time.monotonic()
        self._logged = 0.0
        self._tty = out.isatty()
        self.done = 0

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        elapsed = time.monotonic() - self.started
        filled = WIDTH * min(done, self.total) // self.total
        bar = "#" * filled + "-" * (WIDTH - filled)
        line = f"[{self.label}] |{bar}| {done}/{self.total} {elapsed:5.1f}s {note}".rstrip()
        if self._tty:
            self.out.write("\r" + line + "\x1b[K")
            self.out.flush()
        elif elapsed - self._logged >= LOG_EVERY_S or done >= self.total:
            self._logged = elapsed
            self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        if self._tty:
            self.out.write("\n")
            self.out.flush()
