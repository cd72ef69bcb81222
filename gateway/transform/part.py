"""The transform stage (pipeline step 7): prompt compression, then provider prompt-cache markers.

Runs on cache misses only (the cache stage before it answers hits), before routing, so it resolves
the route itself. Compression is provider-aware through its level (route setting, else the
provider family's default); a request opts out with the header `x-gateway-compression: off`, and
out of cache markers with `x-gateway-prompt-cache: off`. The client's dict is never mutated: a
changed body goes to `ctx.data` with `ctx.changed` set, and is re-encoded when forwarded.

Markers go straight into a native /v1/messages body. An OpenAI chat request that is translated to
Anthropic gets them at translation time (pipeline.payload_for reads ctx.extra["inject_cache_control"]),
since the translated body does not exist yet here.

Records ctx.extra["compression"] = {tokens_before, tokens_after, phrases_replaced, blocks_deduped}
and ctx.extra["promptcache"] = {injected, rule, system_hash}.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from gateway.errors import GatewayError
from gateway.store import StoreUnavailable
from gateway.transform import promptcache as pc
from gateway.transform.compress import (
    CompressionResult,
    compress_anthropic_messages,
    compress_openai_chat,
    compress_openai_completion,
    compress_openai_responses,
    resolve_level,
)
from gateway.transform.compress.tokens import count_tokens

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.config import ModelConfig
    from gateway.pipeline.context import RequestContext
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.transform")

COMPRESSION_HEADER = "x-gateway-compression"
PROMPT_CACHE_HEADER = "x-gateway-prompt-cache"
THREAD_BYTES = 32 * 1024  # bodies above this are compressed in a worker thread
SEEN_BUDGET_S = 0.05  # the store's sighting count may hold a request this long at most
COMPRESSORS = {"chat": compress_openai_chat, "messages": compress_anthropic_messages,
               "responses": compress_openai_responses, "completions": compress_openai_completion}


class _RouteInfo:
    """What the stage needs to know about a route, computed once per route per worker."""

    __slots__ = ("family", "translates", "upstream_model")

    def __init__(self, rt: Runtime, route: ModelConfig, endpoint: str) -> None:
        providers = [rt.providers[d.provider] for d in route.deployments]
        if endpoint == "messages":
            self.translates = False
            self.family = "anthropic"
        else:
            translated = [not p.speaks("openai") and p.speaks("anthropic") for p in providers]
            self.translates = endpoint == "chat" and any(translated)  # only chat is translated
            # The tighter Anthropic default only when every deployment is Anthropic.
            self.family = "anthropic" if all(translated) else "openai"
        self.upstream_model = route.deployments[0].model or route.name


class TransformStage:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._routes: dict[tuple[int, str], _RouteInfo] = {}

    def _route(self, ctx: RequestContext) -> tuple[ModelConfig, _RouteInfo] | None:
        router = self.rt.router
        if router is None:
            return None
        try:
            route = router.resolve(ctx.model)
        except GatewayError:
            return None  # routing reports it, after us
        key = (id(route), ctx.endpoint.name)
        info = self._routes.get(key)
        if info is None:
            info = self._routes[key] = _RouteInfo(self.rt, route, ctx.endpoint.name)
        return route, info

    async def __call__(self, ctx: RequestContext, proto: Any) -> bool:
        endpoint = ctx.endpoint.name
        if endpoint not in COMPRESSORS:
            return False
        found = self._route(ctx)
        if found is None:
            return False
        route, info = found
        body = ctx.json()
        if not isinstance(body, dict):
            return False
        opt_out = ctx.headers.get(COMPRESSION_HEADER, "").strip().lower() == "off"
        level = resolve_level(info.family, route.compression, opt_out)
        out = body
        if level != "off":
            result = await self._compress(ctx, body, level)
            if result is not None:
                # Tokens are counted by count_compressed_tokens, after the answer went out.
                ctx.extra["compression"] = {
                    "tokens_before": 0, "tokens_after": 0,
                    "phrases_replaced": result.phrases_replaced, "blocks_deduped": result.blocks_deduped,
                }
                if result.changed_texts:
                    ctx.extra["compression_texts"] = result.changed_texts
                if result.changed:
                    out = result.body
        if endpoint == "messages" or info.translates:
            out = await self._mark(ctx, out, info)
        if out is not body:
            ctx.data = out
            ctx.changed = True
        return False

    async def _compress(self, ctx: RequestContext, body: dict[str, Any],
                        level: str) -> CompressionResult | None:
        fn = COMPRESSORS[ctx.endpoint.name]
        try:
            if len(ctx.body) > THREAD_BYTES:
                return await asyncio.to_thread(fn, body, level, count=False)
            return fn(body, level, count=False)
        except Exception:  # a compression bug must cost savings, never the request
            log.exception("compression_failed", request_id=ctx.request_id)
            return None

    async def _mark(self, ctx: RequestContext, body: dict[str, Any], info: _RouteInfo) -> dict[str, Any]:
        record: dict[str, Any] = {"injected": False, "rule": None, "system_hash": None}
        ctx.extra["promptcache"] = record
        if ctx.headers.get(PROMPT_CACHE_HEADER, "").strip().lower() == "off":
            return body
        native = ctx.endpoint.name == "messages"
        text = pc.system_text(body) if native else pc.chat_system_text(body)
        if len(text) < pc.REPEAT_CHARS or (native and not pc.eligible(body)):
            return body
        digest = pc.system_hash(text)
        record["system_hash"] = digest
        seen = 0
        if pc.needs_count(len(text)):
            seen = await self._sightings(pc.seen_key(info.upstream_model, digest))
        rule = pc.decide(len(text), seen)
        if rule is None:
            return body
        if native:
            marked = pc.mark_system(body)
            if marked is None:
                return body
            body = marked
        else:
            ctx.extra["inject_cache_control"] = True  # applied to the translated body
        record["injected"] = True
        record["rule"] = rule
        return body

    async def _sightings(self, key: str) -> int:
        """How often this system content was seen in the window, this time included; 0 without a store."""
        store = self.rt.store
        if store is None:
            return 0
        try:
            return int(await asyncio.wait_for(store.hit_count(key, pc.REPEAT_TTL_S), SEEN_BUDGET_S))
        except (StoreUnavailable, TimeoutError):
            return 0  # degrade: only the large-prompt rule applies


async def install(app: GatewayApp, rt: Runtime) -> None:
    # Build the phrase table now, not on the first request. The token counter (tiktoken, ~30 MB)
    # loads lazily, in a thread, the first time compression changes something.
    await asyncio.to_thread(compress_openai_chat, {"messages": [{"role": "user", "content": "In order to warm up."}]},
                            "light", count=False)
    rt.before_stages.append(TransformStage(rt))
    rt.after_hooks.append(count_compressed_tokens)  # before the ledger's hook (plugin order)


async def count_compressed_tokens(ctx: RequestContext, response: bytes | None, tap: object) -> None:
    """Token counts of what compression changed, taken off the request path and off the event loop
    (the saving is the difference; unchanged texts count the same before and after)."""
    pairs = ctx.extra.pop("compression_texts", None)
    record = ctx.extra.get("compression")
    if not pairs or record is None:
        return

    def count() -> tuple[int, int]:
        return sum(count_tokens(a) for a, _ in pairs), sum(count_tokens(b) for _, b in pairs)

    record["tokens_before"], record["tokens_after"] = await asyncio.to_thread(count)
