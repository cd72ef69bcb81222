"""glibc's malloc keeps freed memory by default; a low trim threshold hands it back to the OS.

ONNX Runtime frees its per-inference buffers after every embedding; without this each worker keeps
~20 MB of them (see docs/embedding.md). Same effect as MALLOC_TRIM_THRESHOLD_=1048576 in the
environment, but it also works when the gateway is started without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
