"""The MetaCache as a pipeline part: `async with cache.flight(ctx) as flight` around the upstream call.

Inside, `flight.hit` is an answer to replay (a MetaCache hit, or the answer of an identical request
in flight elsewhere: in this worker, then across workers and pods through the store). Otherwise the
request goes upstream and `flight.publish(ctx)` hands the answer to the followers waiting for it;
leaving the block leaves a `WriteBack` on the context, which the after-work runs (the store write,
then the release of the fleet-wide lease, so waiters elsewhere find the entry).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import structlog

from gateway.cache.cacheability import ENDPOINTS
from gateway.cache.metacache import CacheHit, CacheRequest, MetaCache
from gateway.cache.replay import assemble_anthropic_stream, assemble_openai_stream
from gateway.cache.shared_flight import SharedFlight
from gateway.cache.singleflight import SingleFlight, Slot
from gateway.pipeline.context import CacheOutcome, RequestContext

if TYPE_CHECKING:
    from gateway.cache.keys import Keys

log = structlog.get_logger("gateway.cache")
_enc = msgspec.json.Encoder()


def outcome(hit: CacheHit) -> CacheOutcome:
    return CacheOutcome(phase=hit.phase, tier=hit.tier, similarity=hit.similarity, query=hit.query,
                        tokens_saved=hit.tokens_saved, response=hit.response)


class Flight:
    """One request's way through the cache: a hit to replay, or a miss whose answer is published."""

    __slots__ = ("body", "hit", "slot")

    def __init__(self, hit: CacheOutcome | None = None, slot: Slot | None = None) -> None:
        self.hit = hit
        self.slot = slot  # set for the leader of a cacheable miss
        self.body: bytes | None = None

    def publish(self, ctx: RequestContext) -> None:
        """The answer went out: keep it for the write-back and hand it to this worker's followers."""
        if self.slot is None or ctx.status != 200 or ctx.error:
            return
        body = ctx.response if not ctx.stream else assemble(ctx)
        if body is not None:
            self.body = body
            self.slot.publish(body)  # followers answer now, before the (slower) write-back


MISS = Flight()  # not cacheable, or a follower whose leader failed: nothing to publish


def assemble(ctx: RequestContext) -> bytes | None:
    """A streamed answer as the non-streamed body it stands for (what the cache stores)."""
    if not ctx.events:
        return None
    try:
        doc = (assemble_anthropic_stream(ctx.events) if ctx.endpoint.protocol == "anthropic"
               else assemble_openai_stream(ctx.events))
    except Exception:
        log.warning("stream_assembly_failed", request_id=ctx.request_id)
        return None
    return _enc.encode(doc)


class WriteBack:
    """After-work of a cacheable miss: store the answer, then release the fleet-wide lease."""

    __slots__ = ("body", "cache", "lease", "req", "shared")

    def __init__(self, cache: MetaCache, req: CacheRequest, body: bytes | None, shared: SharedFlight | None,
                 lease: str | None) -> None:
        self.cache = cache
        self.req = req
        self.body = body
        self.shared = shared
        self.lease = lease

    async def run(self) -> None:
        try:
            if self.body is not None:
                await self.cache.store(self.req, self.body)
        finally:
            if self.lease is not None and self.shared is not None:
                await self.shared.release(self.lease)


class CachePart:
    def __init__(self, cache: MetaCache, single: SingleFlight, shared: SharedFlight | None = None) -> None:
        self.cache = cache
        self.single = single
        self.shared = shared
        self.only_t0 = cache.settings.only_temperature_zero

    def _request(self, ctx: RequestContext) -> CacheRequest | None:
        view = ctx.view
        # Cheap rejections first, on the typed view: the pass-through path never decodes the body here.
        if view is None or ctx.endpoint.name not in ENDPOINTS or ctx.key is None or ctx.plan is None:
            return None
        if self.only_t0 and view.temperature != 0 and ctx.endpoint.name != "embeddings":
            return None
        if view.n is not None and view.n > 1:
            return None
        rc = ctx.plan.route.cache
        if rc is not None and not rc.enabled:
            return None
        cc = ctx.headers.get("cache-control", "").lower()
        return CacheRequest(
            tenant=ctx.key.id, endpoint=ctx.endpoint.name, body=ctx.json(),
            no_cache="no-cache" in cc, no_store="no-store" in cc,
            semantic_threshold=rc.semantic_threshold if rc else None, scope=rc.scope if rc else None,
        )

    def flight(self, ctx: RequestContext) -> contextlib.AbstractAsyncContextManager[Flight]:
        """Most requests are not cacheable (temperature above 0, streams of n > 1): for them a
        constant no-op context, without a generator per request. Embeddings are deterministic: no
        temperature to ask for."""
        view = ctx.view
        if view is None or ctx.endpoint.name not in ENDPOINTS or (
                self.only_t0 and view.temperature != 0 and ctx.endpoint.name != "embeddings"):
            return _MISS_CM
        return self._flight(ctx)

    @contextlib.asynccontextmanager
    async def _flight(self, ctx: RequestContext) -> AsyncIterator[Flight]:
        req = self._request(ctx)
        if req is None:
            yield MISS
            return
        if not req.no_cache:
            hit = await self.cache.lookup(req)
            if hit is not None:
                yield Flight(outcome(hit))
                return
        if not self.cache.storable(req):
            yield MISS
            return
        keys = self.cache.keys(req)
        # Single flight: identical concurrent misses in this worker wait for one upstream answer.
        async with self.single.acquire(keys.exact) as slot:
            if not slot.leader:
                if slot.result is not None:
                    yield Flight(CacheOutcome(phase=3, tier="exact", similarity=1.0, query="",
                                              tokens_saved=0, response=slot.result))
                else:
                    yield MISS  # the leader failed: go upstream ourselves
                return
            lease, shared_hit = await self._fleet(keys)
            if shared_hit is not None:
                slot.publish(shared_hit.response)  # this worker's followers too
                yield Flight(shared_hit)
                return
            flight = Flight(slot=slot)
            ctx.collect_stream = ctx.collect_stream or ctx.stream  # assemble a streamed answer for the write-back
            try:
                yield flight
            finally:
                # Also on failure: the lease must be released.
                ctx.write_back = WriteBack(self.cache, req, flight.body, self.shared, lease)

    async def _fleet(self, keys: Keys) -> tuple[str | None, CacheOutcome | None]:
        """This worker's leader waits for a leader elsewhere in the fleet, if there is one."""
        if self.shared is None:
            return None, None
        if await self.shared.claim(keys.exact):
            return keys.exact, None
        shared_hit = await self.shared.wait(keys)
        return None, outcome(shared_hit) if shared_hit is not None else None


class _Miss:
    """`async with` that yields MISS and does nothing else (cheaper than a generator-based one)."""

    __slots__ = ()

    async def __aenter__(self) -> Flight:
        return MISS

    async def __aexit__(self, *exc: object) -> None:
        return None


_MISS_CM = _Miss()


class NullCache:
    """The cache is off: every request is a miss and nothing is written back."""

    cache = None

    def flight(self, ctx: RequestContext) -> _Miss:
        return _MISS_CM
