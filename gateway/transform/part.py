"""The transform part (pipeline step 7): prompt compression, then provider prompt-cache markers.

Runs on cache misses only. Compression is provider-aware through its level (route setting, else the
provider family's default, both from the plan); a request opts out with the header
`x-gateway-compression: off`, and out of cache markers with `x-gateway-prompt-cache: off`. The
client's dict is never mutated: a changed body goes to `ctx.data` with `ctx.changed` set, and is
re-encoded when forwarded.

Markers go straight into a native /v1/messages body. An OpenAI chat request that is translated to
Anthropic gets them at translation time (`ctx.prompt_cache.mark_translated`), since the translated
body does not exist yet here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from gateway.pipeline.context import CompressionRecord, PromptCacheRecord, RequestContext
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
    from gateway.store import Store

log = structlog.get_logger("gateway.transform")

COMPRESSION_HEADER = "x-gateway-compression"
PROMPT_CACHE_HEADER = "x-gateway-prompt-cache"
THREAD_BYTES = 32 * 1024  # bodies above this are compressed in a worker thread
KEYED_BYTES = 4096  # OpenAI caches from 1,024 tokens: a shorter prompt needs no prompt_cache_key
SEEN_BUDGET_S = 0.05  # the store's sighting count may hold a request this long at most
COMPRESSORS = {"chat": compress_openai_chat, "messages": compress_anthropic_messages,
               "responses": compress_openai_responses, "completions": compress_openai_completion}


class Transform:
    def __init__(self, store: Store | None) -> None:
        self.store = store

    async def warm(self) -> None:
        # Build the phrase table now, not on the first request. The token counter (tiktoken, ~30 MB)
        # loads lazily, in a thread, the first time compression changes something.
        warm = {"messages": [{"role": "user", "content": "In order to warm up."}]}
        await asyncio.to_thread(compress_openai_chat, warm, "light", count=False)

    async def apply(self, ctx: RequestContext) -> None:
        endpoint = ctx.endpoint.name
        plan = ctx.plan
        if endpoint not in COMPRESSORS or plan is None:
            return
        body = ctx.json()
        if not isinstance(body, dict):
            return
        opt_out = ctx.headers.get(COMPRESSION_HEADER, "").strip().lower() == "off"
        level = resolve_level(plan.facts.family, plan.route.compression, opt_out)
        out = body
        if level != "off":
            result = await self._compress(ctx, body, level)
            if result is not None:
                # Tokens are counted by `count_tokens_saved`, after the answer went out.
                ctx.compression = CompressionRecord(
                    phrases_replaced=result.phrases_replaced, blocks_deduped=result.blocks_deduped,
                    json_compacted=result.json_compacted, outputs_referenced=result.outputs_referenced,
                    changed_texts=list(result.changed_texts or ()),
                    compaction_texts=list(result.compaction_texts or ()))
                if result.changed:
                    out = result.body
        if endpoint == "messages" or plan.facts.translates:
            out = await self._mark(ctx, out, plan.facts.billing_model or ctx.model)
        elif endpoint in ("chat", "responses") and plan.facts.openai_only and len(ctx.body) >= KEYED_BYTES:
            out = self._keyed(ctx, out)
        if out is not body:
            ctx.data = out
            ctx.changed = True

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

    def _keyed(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI caches long prefixes by itself; a `prompt_cache_key` per tenant and conversation
        keeps one conversation on one cache (set only where the client did not set its own)."""
        if ctx.key is None or ctx.headers.get(PROMPT_CACHE_HEADER, "").strip().lower() == "off":
            return body
        key = pc.prompt_cache_key(ctx.key.id, body)
        if key is None:
            return body
        ctx.prompt_cache = PromptCacheRecord(rule="prompt_cache_key")
        return {**body, pc.CACHE_KEY_FIELD: key}

    async def _mark(self, ctx: RequestContext, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        record = ctx.prompt_cache = PromptCacheRecord()
        if ctx.headers.get(PROMPT_CACHE_HEADER, "").strip().lower() == "off":
            return body
        native = ctx.endpoint.name == "messages"
        # A conversation long enough to cache gets the documented breakpoints: tools and system,
        # then the latest turns (the last one moves forward every turn), within the limit of four.
        if native and pc.eligible(body) and pc.worth_marking(body, upstream_model):
            marks = pc.mark_conversation(body, upstream_model)
            if marks.placed:
                record.injected, record.rule = True, "conversation"
                return marks.body
        if not native and len(ctx.body) >= pc.CHARS_PER_TOKEN * pc.min_tokens(upstream_model):
            # Long enough to cache: the translated body gets the conversation's breakpoints.
            record.mark_translated, record.injected, record.rule = True, True, "conversation"
        text = pc.system_text(body) if native else pc.chat_system_text(body)
        if len(text) < pc.REPEAT_CHARS or (native and not pc.eligible(body)):
            return body
        digest = pc.system_hash(text)
        record.system_hash = digest
        seen = 0
        if pc.needs_count(len(text)):
            seen = await self._sightings(pc.seen_key(upstream_model, digest))
        rule = pc.decide(len(text), seen)
        if rule is None:
            return body
        if native:
            marked = pc.mark_system(body)
            if marked is None:
                return body
            body = marked
        else:
            record.mark_translated = True  # applied to the translated body
        record.injected = True
        record.rule = rule
        return body

    async def _sightings(self, key: str) -> int:
        """How often this system content was seen in the window, this time included; 0 without a store."""
        store = self.store
        if store is None:
            return 0
        try:
            return int(await asyncio.wait_for(store.hit_count(key, pc.REPEAT_TTL_S), SEEN_BUDGET_S))
        except (StoreUnavailable, TimeoutError):
            return 0  # degrade: only the large-prompt rule applies


    async def count_tokens_saved(self, ctx: RequestContext) -> None:
        """After-work: token counts of what compression changed, off the request path and off the
        event loop (the saving is the difference; unchanged texts count the same before and after)."""
        record = ctx.compression
        if record is None or not (record.changed_texts or record.compaction_texts):
            return
        pairs, record.changed_texts = record.changed_texts, []
        compacted, record.compaction_texts = record.compaction_texts, []

        def count(texts: list[tuple[str, str]]) -> tuple[int, int]:
            return sum(count_tokens(a) for a, _ in texts), sum(count_tokens(b) for _, b in texts)

        def both() -> tuple[tuple[int, int], tuple[int, int]]:
            return count(pairs), count(compacted)

        (record.tokens_before, record.tokens_after), (record.compaction_before, record.compaction_after) = \
            await asyncio.to_thread(both)


class NullTransform:
    """Transforms off: the request goes out as the client sent it."""

    async def warm(self) -> None:
        return None

    async def apply(self, ctx: RequestContext) -> None:
        return None

    async def count_tokens_saved(self, ctx: RequestContext) -> None:
        return None
