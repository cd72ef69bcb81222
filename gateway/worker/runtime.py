"""Per-worker state, built once in `__rsgi_init__` and closed in `__rsgi_del__`.

Everything the request path needs (configuration, pools, router, authenticator, optional stages)
is resolved here, so no request ever parses configuration or builds a client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.config import Config
from gateway.costs.prices import PriceTable, load_pricing
from gateway.governance.auth import Authenticator
from gateway.pipeline.stages import AfterHook, Pipeline, Stage
from gateway.providers.routing import Router
from gateway.providers.upstream import Provider, open_providers
from gateway.worker.loadmon import LoopMonitor

log = structlog.get_logger("gateway.worker.runtime")


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.providers: dict[str, Provider] = {}
        self.router: Router = None  # type: ignore[assignment]  # set by start(), before any request
        self.auth = Authenticator(cfg.auth)
        self.prices: PriceTable | None = None
        self.store: Any = None  # the shared store (gateway.store.redis.Store), opened by store_install
        self.cache: Any = None  # the MetaCache (gateway.cache.metacache), when enabled
        self.before_stages: list[Stage] = []
        self.after_hooks: list[AfterHook] = []
        # Optional parts that are degraded, with the reason (shown by /readyz).
        self.degraded: dict[str, str] = {}
        self.ready = False
        self.loop_monitor = LoopMonitor()
        self.pipeline: Pipeline | None = None
        self._closers: list[Any] = []
        self._warmup: asyncio.Future[Any] | None = None

    def start(self) -> None:
        self.providers = open_providers(self.cfg.providers, self.cfg.server.port)
        self.router = Router(self.cfg, self.providers)
        self.pipeline = Pipeline(self)
        self.prices = load_pricing(self.cfg.pricing)  # one price table for the ledger and budgets
        self.ready = True

    def start_warmup(self) -> None:
        self.loop_monitor.start()
        # Background: a provider that is down must not hold up the worker's start.
        self._warmup = asyncio.ensure_future(
            asyncio.gather(*(p.warm_up() for p in self.providers.values()), return_exceptions=True)
        )

    def on_close(self, closer: Any) -> None:
        """Register an async or sync callable run at shutdown (stores, audit sinks, thread pools)."""
        self._closers.append(closer)

    async def close(self) -> None:
        self.ready = False
        if self.pipeline is not None:
            await self.pipeline.drain(self.cfg.server.drain_timeout_s)
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        await self.loop_monitor.stop()
        for closer in reversed(self._closers):
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("close_failed", closer=repr(closer))
        for p in self.providers.values():
            await p.close()
