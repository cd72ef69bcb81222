"""structlog set-up: JSON in production, readable in a terminal, written off the event loop.

Records go through a stdlib QueueHandler to a listener thread, so a slow stdout never blocks a
request. Secrets are removed by a processor before anything is rendered.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_FIELDS = frozenset({"authorization", "api_key", "x-api-key", "api-key", "key", "master_key", "password",
                            "token", "secret"})
_listener: logging.handlers.QueueListener | None = None


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if name.lower() in _SECRET_FIELDS:
            event[name] = "[redacted]"
    return event


def configure(fmt: str = "auto", level: str = "info") -> None:
    global _listener
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()) if fmt == "console"
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger("gateway")
    root.setLevel(level.upper())
    root.propagate = False
    if _listener is not None:
        _listener.stop()
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [logging.handlers.QueueHandler(q)]
    _listener = logging.handlers.QueueListener(q, out)
    _listener.start()
    atexit.register(flush)


def flush() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
