"""Opens the worker's shared store (Redis for pods, the embedded SQLite file on one machine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gateway.store import open_configured

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.store")


async def install(app: GatewayApp, rt: Runtime) -> None:
    cfg = rt.cfg.store
    store = open_configured(cfg)
    rt.store = store
    rt.on_close(store.close)
    if not await store.ping():
        # Not fatal: the store reconnects by itself; until then its users degrade (see /readyz).
        log.warning("store_unreachable_at_start", backend="redis" if cfg.redis_url else "embedded")
