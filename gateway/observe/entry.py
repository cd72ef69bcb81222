"""The audit entry ("VAS log"): its schema and how it is read off a finished RequestContext.

Field names follow the seed's VAS logs (`metacache.hit`, `metacache.query`, `metacache.tokens_saved`,
`latency_ms`, `routing_strategy`, `routing_reason`, `model`). Times are milliseconds:

    latency_ms   request start -> answer finished (whole stream included), as the client saw it
    ttfb_ms      request start -> first byte sent to the client
    upstream_ms  request sent to the provider -> its response headers (last attempt)
    overhead_ms  the gateway's own share before the first byte: ttfb_ms - upstream_ms when a
                 provider answered, else latency_ms (cache hit, rejection)

Everything is read from the context's typed slots: a part that is off leaves zeros and nulls.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import msgspec

from gateway.cache.types import TIERS
from gateway.pipeline.context import PolicyFlag

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext

POD = socket.gethostname()


class MetaCacheInfo(msgspec.Struct, kw_only=True):
    hit: bool = False
    query: str | None = None  # the stored query that matched
    tokens_saved: int = 0
    phase: int = 0  # 1 intent, 2 near-miss, 3 exact, 4 semantic; 0 = miss
    tier: str | None = None
    similarity: float | None = None


class AuditEntry(msgspec.Struct, kw_only=True):
    ts: float  # unix seconds at request start
    request_id: str
    key_id: str | None  # the key's id, never the key
    team: str | None = None
    endpoint: str
    stream: bool = False
    model: str  # the seed's meaning: from the request on a cache hit, the deployment's otherwise
    requested_model: str
    provider: str | None = None
    deployment: str | None = None  # the model name the provider was sent
    status: int
    error: str | None = None
    attempts: int = 0
    fallback: bool = False
    routing_strategy: str  # "cache" | "direct" | "fallback" | "rejected"
    routing_reason: str  # "cache_hit:tier=<tier>" | "provider:<name>" | "fallback:<name>" | error code
    latency_ms: float
    ttfb_ms: float | None = None
    upstream_ms: float | None = None
    overhead_ms: float
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # read from the provider's cache (prompt_tokens_details / cache_read_input_tokens)
    tokens_compressed: int = 0  # removed from the prompt by compression (phrases, dedup)
    tokens_compacted: int = 0  # removed by lossless compaction (JSON, whitespace, repeated tool outputs)
    prompt_cache_injected: bool = False
    metacache: MetaCacheInfo = msgspec.field(default_factory=MetaCacheInfo)
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    saved_cache_usd: float = 0.0
    saved_compression_usd: float = 0.0
    saved_provider_cache_usd: float = 0.0
    saved_compaction_usd: float = 0.0
    policy_flags: list[PolicyFlag] = []  # policies that flagged the request or answer (never the text)
    policy_beside_ms: float | None = None  # how long the checks beside the upstream call took
    pod: str = ""
    pid: int = 0


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(AuditEntry)
list_decoder = msgspec.json.Decoder(list[AuditEntry])


def _cache_info(ctx: RequestContext) -> MetaCacheInfo:
    hit = ctx.cache
    if hit is None:
        return MetaCacheInfo()
    return MetaCacheInfo(hit=True, phase=hit.phase, tier=hit.tier or TIERS.get(hit.phase, "unknown"),
                         query=hit.query, tokens_saved=hit.tokens_saved, similarity=hit.similarity)


def _routing(ctx: RequestContext, cache: MetaCacheInfo, provider: str | None) -> tuple[str, str]:
    if cache.hit:
        return "cache", f"cache_hit:tier={cache.tier}"
    if provider is None:
        return "rejected", ctx.error or f"status:{ctx.status}"
    if ctx.fallback:
        return "fallback", f"fallback:{provider}"
    return "direct", f"provider:{provider}"


def entry_from_ctx(ctx: RequestContext) -> AuditEntry:
    """Read once, after the answer went out (`ctx.t_end` is when it finished)."""
    now = time.perf_counter()
    end = ctx.t_end or now
    latency = (end - ctx.t_start) * 1000.0
    cache = _cache_info(ctx)
    target = ctx.target
    provider = target.provider.name if target is not None and not cache.hit else None
    strategy, reason = _routing(ctx, cache, provider)
    ttfb = (ctx.t_first_byte - ctx.t_start) * 1000.0 if ctx.t_first_byte else None
    called = provider is not None and ctx.t_upstream > 0.0
    upstream = ctx.upstream_ms if called else None
    if called:
        overhead = (ttfb if ttfb is not None else latency) - ctx.upstream_ms
    else:
        overhead = latency
    usage = ctx.usage
    cost = ctx.cost
    pc = ctx.prompt_cache
    status = ctx.status or (500 if ctx.error is None else 499)
    key = ctx.key
    deployment = target.model if provider is not None and target is not None else None
    return AuditEntry(
        ts=time.time() - (now - ctx.t_start),
        request_id=ctx.request_id,
        key_id=key.id if key is not None else None,
        team=key.team if key is not None else None,
        endpoint=ctx.endpoint.name,
        stream=ctx.stream,
        model=deployment or ctx.model,
        requested_model=ctx.model,
        provider=provider,
        deployment=deployment,
        status=status,
        error=ctx.error,
        attempts=ctx.attempts,
        fallback=ctx.fallback,
        routing_strategy=strategy,
        routing_reason=reason,
        latency_ms=round(latency, 3),
        ttfb_ms=round(ttfb, 3) if ttfb is not None else None,
        upstream_ms=round(upstream, 3) if upstream is not None else None,
        overhead_ms=round(max(0.0, overhead), 3),
        tokens_in=usage.prompt if usage is not None else 0,
        tokens_out=usage.output if usage is not None else 0,
        tokens_cached=usage.cache_read if usage is not None else 0,
        tokens_compressed=ctx.compression.tokens_saved if ctx.compression is not None else 0,
        tokens_compacted=ctx.compression.compaction_saved if ctx.compression is not None else 0,
        prompt_cache_injected=pc.injected if pc is not None else False,
        metacache=cache,
        cost_usd=cost.cost_usd if cost is not None else 0.0,
        saved_usd=cost.saved_usd if cost is not None else 0.0,
        saved_cache_usd=cost.saved_cache_usd if cost is not None else 0.0,
        saved_compression_usd=cost.saved_compression_usd if cost is not None else 0.0,
        saved_provider_cache_usd=cost.saved_provider_cache_usd if cost is not None else 0.0,
        saved_compaction_usd=cost.saved_compaction_usd if cost is not None else 0.0,
        policy_flags=list(ctx.policy_flags),
        policy_beside_ms=round(ctx.policy_beside_ms, 3) if ctx.policy_beside_ms is not None else None,
        pod=POD,
        pid=os.getpid(),
    )
