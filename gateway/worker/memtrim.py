"""Handing freed heap memory back to the OS: fixed glibc thresholds, and `malloc_trim` when it pays.

ONNX Runtime frees its per-inference buffers after every embedding; with glibc's dynamic thresholds
each worker kept ~20 MB of them (docs/embedding.md): once a large block is freed glibc raises its
mmap threshold, so later large buffers come from the heap and stay. A fixed trim threshold (1 MB)
fixes the mmap threshold too (128 KB). Same effect as MALLOC_TRIM_THRESHOLD_=1048576 in the
environment, but it also works when the gateway is started without it.

The trim threshold only returns memory at the top of a heap. `malloc_trim(0)` also returns the free
pages in the middle of the heaps (of every thread): `Trimmer.after()` runs it a moment after a large
request, never more than once a second, and `Trimmer.start()` every 10 s while requests come in.

Under CPython's default allocator (pymalloc) the small objects of a large body (20,000 messages)
sit in 1 MB arenas that neither reaches; a burst of them leaves a worker ~20% larger
(docs/faults.md). With PYTHONMALLOC=malloc in the environment every Python object lives on glibc's
heaps and the trims return that too, for more CPU per small request (measured +7-15% under wrk on a
shared machine, so not the default).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping

M_TRIM_THRESHOLD = -1
MB = 1024 * 1024


def thresholds(environ: Mapping[str, str]) -> dict[int, int]:
    """The mallopt settings for this process: none when the operator set glibc's own variables."""
    if environ.get("MALLOC_TRIM_THRESHOLD_") or environ.get("MALLOC_MMAP_THRESHOLD_"):
        return {}
    return {M_TRIM_THRESHOLD: MB}


def fix_thresholds() -> bool:
    """True when glibc accepted them (False elsewhere: musl, macOS, or an operator's own in the env)."""
    settings = thresholds(os.environ)
    name = ctypes.util.find_library("c")
    if not settings or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return all([bool(libc.mallopt(param, value)) for param, value in settings.items()])
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
    """Hands freed heap memory back to the OS a moment after large requests (at most once per
    `delay_s`), and every `every_s` while requests come in."""

    # Requests at least this big schedule a trim. The 20,000-message bodies that fragment the heap
    # most are 600 KB; a trim costs ~0.3 ms per MB it returns, well under 1 ms when there is little.
    LARGE_BODY_BYTES = 256 * 1024

    def __init__(self, delay_s: float = 1.0, every_s: float = 10.0) -> None:
        self._trim = _malloc_trim()
        self._delay_s = delay_s
        self._every_s = every_s
        self._pending = False
        self._busy = False  # a request finished since the last trim
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def after(self, body_bytes: int) -> None:
        """Call after each request with its body size; cheap for small ones."""
        self._busy = True
        if body_bytes >= self.LARGE_BODY_BYTES and not self._pending and self._trim is not None:
            self._pending = True
            asyncio.get_running_loop().call_later(self._delay_s, self._run)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The periodic trim, on the worker's loop (nothing without glibc)."""
        if self._trim is not None and self._every_s > 0:
            self._timer = loop.call_later(self._every_s, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy and not self._pending:
            self._run()
        self._timer = loop.call_later(self._every_s, self._tick, loop)

    def _run(self) -> None:
        self._pending = False
        self._busy = False
        if self._trim is not None:
            self._trim()
            self.trims += 1
