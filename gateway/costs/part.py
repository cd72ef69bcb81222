"""The costs part: each request priced from the one price table and its savings recorded in the
ledger (after-work), plus GET /admin/savings. Null twin for when accounting is off."""

from __future__ import annotations

import asyncio

import msgspec

from gateway.costs.ledger import Ledger, account
from gateway.costs.prices import PriceTable
from gateway.governance.auth import Authenticator
from gateway.pipeline.context import RequestContext
from gateway.protocol.usage import usage_of_body
from gateway.store import Store
from gateway.worker.lifecycle import stop_task
from gateway.worker.routes import Routes

FLUSH_INTERVAL_S = 1.0
_enc = msgspec.json.Encoder()
JSON = [("content-type", "application/json")]


class Costs:
    def __init__(self, prices: PriceTable, store: Store | None, auth: Authenticator) -> None:
        self.prices = prices
        self.ledger = Ledger(lambda: store)
        self.auth = auth
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.ensure_future(self.ledger.run_flusher(FLUSH_INTERVAL_S))

    def routes(self) -> Routes:
        return {("GET", "/admin/savings"): self.savings}

    def account(self, ctx: RequestContext) -> None:
        """After-work: this request's cost and savings (`ctx.cost`), added to the ledger's totals."""
        if ctx.key is None or not ctx.model:
            return  # refused before auth or parsing: nothing was served to anyone
        price = self.prices.lookup(billing_model(ctx)) or self.prices.lookup(ctx.model)
        hit = ctx.cache
        usage = usage_of_body(hit.response) if hit is not None else ctx.usage
        sent = ctx.compression if hit is None else None  # a hit sent nothing: no layer saved on it
        cost = account(
            usage, price, cache_hit=hit is not None, hit_tokens=hit.tokens_saved if hit is not None else 0,
            compression_tokens_saved=sent.tokens_saved if sent is not None else 0,
            compaction_tokens_saved=sent.compaction_saved if sent is not None else 0,
        )
        ctx.cost = cost
        self.ledger.record(ctx.model, ctx.key.id, cost)

    async def savings(self, scope: object, proto: object, headers: dict[str, str]) -> None:
        self.auth.require_admin(headers)
        body = _enc.encode(await self.ledger.totals())
        proto.response_bytes(200, JSON, body)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await stop_task(self._flusher)
        await self.ledger.flush()  # before the store closes


def billing_model(ctx: RequestContext) -> str:
    """The model the provider bills: the target's, or on a cache hit the route's first deployment's."""
    if ctx.target is not None:
        return ctx.target.model
    if ctx.plan is not None and ctx.plan.facts.billing_model:
        return ctx.plan.facts.billing_model
    return ctx.model


class NullCosts:
    def start(self) -> None:
        return None

    def routes(self) -> Routes:
        return {}

    def account(self, ctx: RequestContext) -> None:
        return None

    async def close(self) -> None:
        return None
