"""glibc's malloc keeps freed memory by default; a low trim threshold hands it back to the OS.

ONNX Runtime frees its per-inference buffers after every embedding; without this each worker keeps
~20 MB of them (see docs/embedding.md). Same effect as MALLOC_TRIM_THRESHOLD_=1048576 in the
environment, but it also works when the gateway is started without it.

The trim threshold only returns memory at the top of a heap. Large request bodies (a burst of
requests with 20,000 messages each) leave free pages in the middle of the heaps of the threads
that parsed and compressed them: `Trimmer.soon()` runs `malloc_trim(0)` (which hands those back
too) once, a moment after such a request, never more than once a second.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable

M_TRIM_THRESHOLD = -1
TRIM_THRESHOLD_BYTES = 1024 * 1024


def lower_trim_threshold() -> bool:
    """True when glibc accepted the setting (False elsewhere: musl, macOS, or already set by env)."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    fn.argtypes = [ctypes.c_size_t]
    return lambda: fn(0)


class Trimmer:
    """Hands freed heap memory back to the OS a moment after large requests, at most once per `delay_s`."""

    LARGE_BODY_BYTES = 1 << 20  # requests at least this big schedule a trim

    def __init__(self, delay_s: float = 1.0) -> None:
        self._trim = _malloc_trim()
        self._delay_s = delay_s
        self._pending = False
        self.trims = 0

    def after(self, body_bytes: int) -> None:
        """Call after each request with its body size; cheap for small ones."""
        if body_bytes >= self.LARGE_BODY_BYTES and not self._pending and self._trim is not None:
            self._pending = True
            asyncio.get_running_loop().call_later(self._delay_s, self._run)

    def _run(self) -> None:
        self._pending = False
        if self._trim is not None:
            self._trim()
            self.trims += 1
