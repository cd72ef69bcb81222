"""The shared store: one async interface (`base.Store`), Redis for pods, embedded SQLite for one machine.

Chosen once at start-up by `open_configured`; see `base` for the error model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store.base import (
    CLEAR,
    VLOG_MAX,
    EntryWrite,
    Store,
    StoreBreaker,
    StoreMemory,
    StoreUnavailable,
    VecChange,
)

if TYPE_CHECKING:
    from gateway.config import StoreConfig

__all__ = [
    "CLEAR",
    "VLOG_MAX",
    "EntryWrite",
    "Store",
    "StoreBreaker",
    "StoreMemory",
    "StoreUnavailable",
    "VecChange",
    "open_configured",
    "open_store",
]


def open_store(redis_url: str | None, embedded_path: str = ".gateway/store.db", *,
               connect_timeout_s: float = 0.25, op_timeout_s: float = 0.5) -> Store:
    """Chosen once at start-up: Redis when a URL is configured, else the embedded file.

    The timeouts bound what a slow Redis can add to a request before the breaker bypasses it.
    """
    if redis_url:
        from gateway.store.redis import RedisStore

        return RedisStore(redis_url, connect_timeout_s=connect_timeout_s, op_timeout_s=op_timeout_s)
    from gateway.store.embedded import EmbeddedStore

    return EmbeddedStore(embedded_path)


def open_configured(cfg: StoreConfig) -> Store:
    """The store the `store:` section describes."""
    return open_store(cfg.redis_url or None, cfg.embedded_path, connect_timeout_s=cfg.connect_timeout_ms / 1000,
                      op_timeout_s=cfg.op_timeout_ms / 1000)
