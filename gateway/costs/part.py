"""Wires the savings ledger into a worker: the after-hook that prices each request, GET /admin/savings.

The hook runs before observability's (see plugins.PLUGINS), so `ctx.extra["cost"]` is set by the
time the audit log and the metrics read it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.costs.ledger import Ledger, account
from gateway.costs.prices import PriceTable, load_pricing
from gateway.errors import GatewayError
from gateway.transform.promptcache import TokenUsage, parse_usage, usage_of_body

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.respond import StreamTap
    from gateway.worker.runtime import Runtime

FLUSH_INTERVAL_S = 1.0
_enc = msgspec.json.Encoder()
JSON = [("content-type", "application/json")]


def _usage(ctx: RequestContext, response: bytes | None, tap: StreamTap | None) -> TokenUsage | None:
    if ctx.cache_hit:
        cache = ctx.extra.get("cache") or {}
        return (parse_usage(cache.get("usage")) or usage_of_body(cache.get("response"))
                or parse_usage(ctx.usage) or usage_of_body(response))
    # The provider's own usage first: a translated answer's ctx.usage is OpenAI-shaped and has
    # folded cache writes into prompt_tokens.
    return (parse_usage(ctx.extra.get("upstream_usage")) or parse_usage(ctx.usage)
            or parse_usage(tap.usage if tap is not None else None) or usage_of_body(response))


class LedgerHook:
    def __init__(self, rt: Runtime, prices: PriceTable, ledger: Ledger) -> None:
        self.rt = rt
        self.prices = prices
        self.ledger = ledger

    def upstream_model(self, ctx: RequestContext) -> str:
        """The model the provider bills: the target's, or on a cache hit the route's first deployment's."""
        if ctx.target is not None:
            return ctx.target.model
        try:
            route = self.rt.router.resolve(ctx.model)
        except (GatewayError, AttributeError):
            return ctx.model
        return route.deployments[0].model or ctx.model

    def __call__(self, ctx: RequestContext, response: bytes | None, tap: StreamTap | None) -> None:
        if ctx.key is None or not ctx.model:
            return  # refused before auth or parsing: nothing was served to anyone
        price = self.prices.lookup(self.upstream_model(ctx)) or self.prices.lookup(ctx.model)
        compression = ctx.extra.get("compression") or {}
        removed = max(0, int(compression.get("tokens_before", 0)) - int(compression.get("tokens_after", 0)))
        cost = account(
            _usage(ctx, response, tap), price, cache_hit=ctx.cache_hit,
            hit_tokens=int((ctx.extra.get("cache") or {}).get("tokens_saved") or 0),
            compression_tokens_saved=0 if ctx.cache_hit else removed,
        )
        ctx.extra["cost"] = cost.summary()
        self.ledger.record(ctx.model, ctx.key.id, cost)

    async def savings(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        self.rt.auth.require_admin(headers)
        body = _enc.encode(await self.ledger.totals())
        proto.response_bytes(200, JSON, body)


async def install(app: GatewayApp, rt: Runtime) -> None:
    prices = rt.prices or load_pricing(rt.cfg.pricing)
    ledger = Ledger(lambda: rt.store)
    hook = LedgerHook(rt, prices, ledger)
    rt.after_hooks.append(hook)
    app.routes[("GET", "/admin/savings")] = hook.savings
    flusher = asyncio.ensure_future(ledger.run_flusher(FLUSH_INTERVAL_S))

    async def close() -> None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await ledger.flush()  # runs before the store closes: closers run in reverse order

    rt.on_close(close)
