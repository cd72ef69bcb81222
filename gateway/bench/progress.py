"""A one-line progress display for long benchmark runs: redrawn in place on a terminal, sparse otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """`update()` as often as you like; it redraws at most 10 times a second.

    On a terminal the line is rewritten in place; in a log (CI) a line is printed only every
    `log_every` seconds (or when forced), so the log stays short.
    """

    def __init__(self, stream: TextIO | None = None, log_every: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self._last_draw = 0.0
        self._last_logged = time.monotonic()
        self._width = 0

    def update(self, fraction: float, message: str, eta_s: float | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        line = f"{bar(fraction)} {fraction * 100:5.1f}%  {message}"
        if eta_s is not None:
            line += f"  eta {fmt_seconds(eta_s)}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        elif force or now - self._last_logged >= self.log_every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_logged = now
        self._last_draw = now

    def log(self, text: str) -> None:
        """A permanent line above the progress line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
