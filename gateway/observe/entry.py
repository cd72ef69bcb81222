"""The audit entry ("VAS log"): its schema and how it is read off a finished RequestContext.

Field names follow the seed's VAS logs (`metacache.hit`, `metacache.query`, `metacache.tokens_saved`,
`latency_ms`, `routing_strategy`, `routing_reason`, `model`). Times are milliseconds:

    latency_ms   request start -> answer finished (whole stream included), as the client saw it
    ttfb_ms      request start -> first byte sent to the client
    upstream_ms  request sent to the provider -> its response headers (last attempt)
    overhead_ms  the gateway's own share before the first byte: ttfb_ms - upstream_ms when a
                 provider answered, else latency_ms (cache hit, rejection)

Values other stages leave in `ctx.extra` ("cache", "compression", "cost", "promptcache") are read
defensively: a stage that is absent leaves zeros and nulls.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.cache.types import TIERS

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
    tokens_compressed: int = 0  # removed from the prompt by compression
    prompt_cache_injected: bool = False
    metacache: MetaCacheInfo = msgspec.field(default_factory=MetaCacheInfo)
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    saved_cache_usd: float = 0.0
    saved_compression_usd: float = 0.0
    saved_provider_cache_usd: float = 0.0
    pod: str = ""
    pid: int = 0


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(AuditEntry)
list_decoder = msgspec.json.Decoder(list[AuditEntry])


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def tokens(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(in, out, cached) from an OpenAI or Anthropic usage object; `in` counts cached tokens too."""
    if not usage:
        return 0, 0, 0
    if "input_tokens" in usage and "prompt_tokens" not in usage:
        # Anthropic: input_tokens excludes what was read from or written to the prompt cache.
        # (The Responses API also says input_tokens, with OpenAI's details: both shapes handled.)
        cached = _int(usage.get("cache_read_input_tokens"))
        details = usage.get("input_tokens_details")
        if isinstance(details, dict):
            cached = cached or _int(details.get("cached_tokens"))
            total_in = _int(usage.get("input_tokens"))
        else:
            total_in = (_int(usage.get("input_tokens")) + cached
                        + _int(usage.get("cache_creation_input_tokens")))
        return total_in, _int(usage.get("output_tokens")), cached
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached


def _cache_info(ctx: RequestContext, extra: dict[str, Any]) -> MetaCacheInfo:
    info = extra.get("cache")
    if not ctx.cache_hit and not (isinstance(info, dict) and info.get("phase")):
        return MetaCacheInfo()
    info = info if isinstance(info, dict) else {}
    phase = _int(info.get("phase")) or ctx.cache_phase
    similarity = info.get("similarity", ctx.cache_similarity)
    return MetaCacheInfo(
        hit=True, phase=phase, tier=str(info.get("tier") or TIERS.get(phase, "unknown")),
        query=info.get("query") if isinstance(info.get("query"), str) else None,
        tokens_saved=_int(info.get("tokens_saved")),
        similarity=_num(similarity) if similarity is not None else None,
    )


def _routing(ctx: RequestContext, cache: MetaCacheInfo, provider: str | None) -> tuple[str, str]:
    if cache.hit:
        return "cache", f"cache_hit:tier={cache.tier}"
    if provider is None:
        return "rejected", ctx.error or f"status:{ctx.status}"
    if ctx.fallback:
        return "fallback", f"fallback:{provider}"
    return "direct", f"provider:{provider}"


def entry_from_ctx(ctx: RequestContext, t_end: float | None = None) -> AuditEntry:
    """Read once, after the answer went out; `t_end` is the perf_counter when it finished."""
    now = time.perf_counter()
    end = t_end or now
    extra = ctx.extra
    latency = (end - ctx.t_start) * 1000.0
    cache = _cache_info(ctx, extra)
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
    t_in, t_out, t_cached = tokens(ctx.usage)
    comp = extra.get("compression")
    removed = (max(0, _int(comp.get("tokens_before")) - _int(comp.get("tokens_after")))
               if isinstance(comp, dict) else 0)
    cost_raw = extra.get("cost")
    cost: dict[str, Any] = cost_raw if isinstance(cost_raw, dict) else {}
    s_cache, s_comp = _num(cost.get("saved_cache_usd")), _num(cost.get("saved_compression_usd"))
    s_prov = _num(cost.get("saved_provider_cache_usd"))
    pc = extra.get("promptcache")
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
        tokens_in=t_in,
        tokens_out=t_out,
        tokens_cached=t_cached,
        tokens_compressed=removed,
        prompt_cache_injected=bool(pc.get("injected")) if isinstance(pc, dict) else False,
        metacache=cache,
        cost_usd=_num(cost.get("cost_usd")),
        saved_usd=s_cache + s_comp + s_prov,
        saved_cache_usd=s_cache,
        saved_compression_usd=s_comp,
        saved_provider_cache_usd=s_prov,
        pod=POD,
        pid=os.getpid(),
    )
