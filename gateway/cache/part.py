"""The MetaCache as a pipeline stage: lookup before routing, hits answered (JSON or replayed SSE),
single flight for identical misses (in the worker, then across workers and pods through the store),
write-back after the answer went out."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from gateway.cache.metacache import CacheHit, CacheRequest, CacheSettings, MetaCache
from gateway.cache.replay import assemble_anthropic_stream, assemble_openai_stream, replay_anthropic, replay_openai
from gateway.cache.shared_flight import SharedFlight
from gateway.cache.singleflight import SingleFlight
from gateway.pipeline.context import RequestContext
from gateway.pipeline.respond import StreamTap

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.cache")
_enc = msgspec.json.Encoder()
CACHED_ENDPOINTS = frozenset({"chat", "messages", "completions"})


class CacheStage:
    def __init__(self, rt: Runtime, cache: MetaCache, flight: SingleFlight,
                 shared: SharedFlight | None = None) -> None:
        self.rt = rt
        self.cache = cache
        self.flight = flight
        self.shared = shared
        self.only_t0 = cache.settings.only_temperature_zero

    def _request(self, ctx: RequestContext) -> CacheRequest | None:
        view = ctx.view
        # Cheap rejections first, on the typed view: the pass-through path never decodes the body here.
        if view is None or ctx.endpoint.name not in CACHED_ENDPOINTS or ctx.key is None:
            return None
        if self.only_t0 and view.temperature != 0:
            return None
        if view.n is not None and view.n > 1:
            return None
        route = self.rt.router.resolve(ctx.model)
        rc = route.cache
        if rc is not None and not rc.enabled:
            return None
        cc = ctx.headers.get("cache-control", "").lower()
        return CacheRequest(
            tenant=ctx.key.id, endpoint=ctx.endpoint.name, body=ctx.json(),
            no_cache="no-cache" in cc, no_store="no-store" in cc,
            semantic_threshold=rc.semantic_threshold if rc else None, scope=rc.scope if rc else None,
        )

    async def __call__(self, ctx: RequestContext, proto: Any) -> bool:
        req = self._request(ctx)
        if req is None:
            return False
        if not req.no_cache:
            hit = await self.cache.lookup(req)
            if hit is not None:
                await self.answer(ctx, proto, hit)
                return True
        if not self.cache.storable(req):
            return False
        # Single flight: identical concurrent misses in this worker wait for one upstream answer.
        keys = self.cache.keys(req)
        flight = self.flight.acquire(keys.exact)
        slot = await flight.__aenter__()
        if not slot.leader:
            await flight.__aexit__(None, None, None)
            if slot.result is not None:
                hit = CacheHit(phase=3, tier="exact", similarity=1.0, query="", response=slot.result,
                               tokens_saved=0)
                await self.answer(ctx, proto, hit)
                return True
            return False  # the leader failed: go upstream ourselves
        # ... and this worker's leader waits for a leader elsewhere in the fleet, if there is one.
        if self.shared is not None:
            if await self.shared.claim(keys.exact):
                ctx.extra["flight_lease"] = keys.exact
            else:
                shared_hit = await self.shared.wait(keys)
                if shared_hit is not None:
                    slot.publish(shared_hit.response)  # this worker's followers too
                    await flight.__aexit__(None, None, None)
                    await self.answer(ctx, proto, shared_hit)
                    return True
        ctx.extra["cache_req"] = req
        ctx.extra["flight"] = (flight, slot)
        if ctx.stream:
            ctx.extra["collect_stream"] = True  # assemble the streamed answer for the write-back
        return False

    async def answer(self, ctx: RequestContext, proto: Any, hit: CacheHit) -> None:
        if ctx.guards:  # input policies running beside the call must pass before a hit is served too
            guards, ctx.guards = ctx.guards, []
            await asyncio.gather(*guards)
        output_filter = ctx.extra.get("output_filter")
        response = hit.response
        if output_filter is not None and not ctx.stream:
            response = await output_filter.check_plain(ctx, response)  # policies added since it was stored
        ctx.cache_hit = True
        ctx.cache_phase = hit.phase
        ctx.cache_similarity = hit.similarity
        ctx.status = 200
        ctx.extra["cache"] = {"phase": hit.phase, "tier": hit.tier, "similarity": hit.similarity,
                              "query": hit.query, "tokens_saved": hit.tokens_saved, "response": hit.response}
        headers = [*ctx.extra.get("response_headers", ()), ("x-gateway-request-id", ctx.request_id),
                   ("x-cache-hit", "true"),
                   ("x-cache-similarity", f"{hit.similarity:.4f}"), ("x-tokens-saved", str(hit.tokens_saved)),
                   ("x-cache-phase", str(hit.phase))]
        ctx.t_first_byte = time.perf_counter()
        if not ctx.stream:
            proto.response_bytes(200, [("content-type", "application/json"), *headers], response)
            return
        frames = (replay_anthropic(hit.response) if ctx.endpoint.protocol == "anthropic"
                  else replay_openai(hit.response, include_usage=ctx.include_usage))
        transport = proto.response_stream(200, [("content-type", "text/event-stream"),
                                                ("cache-control", "no-cache"), *headers])
        await transport.send_bytes(b"".join(frames))

    async def after(self, ctx: RequestContext, response: bytes | None, tap: StreamTap | None) -> None:
        req: CacheRequest | None = ctx.extra.pop("cache_req", None)
        flight = ctx.extra.pop("flight", None)
        body: bytes | None = None
        try:
            if req is not None and ctx.status == 200 and not ctx.error:
                body = response if response is not None else self._assemble(ctx, tap)
            if flight is not None and body is not None:
                flight[1].publish(body)  # followers answer now, before the (slower) write-back
        finally:
            if flight is not None:
                await flight[0].__aexit__(None, None, None)
        lease = ctx.extra.pop("flight_lease", None)
        try:
            if req is not None and body is not None:
                await self.cache.store(req, body)
        finally:
            if lease is not None and self.shared is not None:
                await self.shared.release(lease)  # after the write-back: waiters find the entry

    def _assemble(self, ctx: RequestContext, tap: StreamTap | None) -> bytes | None:
        if tap is None or not tap.events:
            return None
        try:
            doc = (assemble_anthropic_stream(tap.events) if ctx.endpoint.protocol == "anthropic"
                   else assemble_openai_stream(tap.events))
        except Exception:
            log.warning("stream_assembly_failed", request_id=ctx.request_id)
            return None
        return _enc.encode(doc)


async def install(app: GatewayApp, rt: Runtime) -> None:
    cfg = rt.cfg.cache
    if not cfg.enabled or rt.store is None:
        return
    embedder = None
    if cfg.semantic:
        from gateway.embed.session import Embedder

        embedder = Embedder.load_or_none(thread_nice=cfg.embed_nice)
        if embedder is None:
            rt.degraded["embedding"] = "model unavailable: semantic cache (phase 4) off"
        else:
            rt.on_close(embedder.close)
    fields = msgspec.structs.asdict(cfg)
    busy_lag_ms = fields.pop("busy_lag_ms")
    flight_wait_s = fields.pop("flight_wait_s")
    fields.pop("embed_nice")  # the embedder's, above
    settings = CacheSettings(**fields)
    rt.loop_monitor.busy_ms = busy_lag_ms
    overloaded = rt.loop_monitor.busy if busy_lag_ms > 0 else None
    cache = MetaCache(rt.store, settings, embedder, overloaded=overloaded)
    shared = SharedFlight(rt.store, cache, wait_s=flight_wait_s) if flight_wait_s > 0 else None
    stage = CacheStage(rt, cache, SingleFlight(), shared)
    rt.cache = cache
    rt.before_stages.append(stage)
    rt.after_hooks.append(stage.after)
    rt.on_close(cache.drain)
