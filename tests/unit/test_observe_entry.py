"""Audit entries read off a finished RequestContext's typed slots."""

from __future__ import annotations

import time

import pytest

from gateway.config import Deployment, ModelConfig, ProviderConfig
from gateway.costs.ledger import RequestCost
from gateway.governance.auth import KeyRecord
from gateway.observe.entry import AuditEntry, decoder, encoder, entry_from_ctx
from gateway.pipeline.context import (
    CacheOutcome,
    CompressionRecord,
    EndpointSpec,
    PolicyFlag,
    PromptCacheRecord,
    RequestContext,
)
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.routing import Target
from gateway.providers.translate import PASSTHROUGH
from gateway.providers.upstream import Provider

CHAT = EndpointSpec("chat", "openai")


def target(provider: str = "openai", model: str = "gpt-4o-2024-08-06", route: str = "gpt-4o") -> Target:
    p = Provider(provider, ProviderConfig(base_url="http://127.0.0.1:1/v1"), 8080)
    return Target(p, model, ModelConfig(name=route, deployments=[Deployment(provider=provider)]), PASSTHROUGH)


def ctx_after(*, model: str = "gpt-4o", start_ago_ms: float = 100.0, upstream_ms: float | None = 80.0,
              ttfb_ago_ms: float | None = 10.0, status: int = 200) -> RequestContext:
    ctx = RequestContext(CHAT, {"authorization": "Bearer sk-secret-client-key"})
    now = time.perf_counter()
    ctx.t_start = now - start_ago_ms / 1000
    ctx.model = model
    ctx.key = KeyRecord(id="team-a", team="research")
    ctx.status = status
    if upstream_ms is not None:
        ctx.target = target()
        ctx.t_upstream = ctx.t_start + 0.005
        ctx.upstream_ms = upstream_ms
        ctx.attempts = 1
    if ttfb_ago_ms is not None:
        ctx.t_first_byte = now - ttfb_ago_ms / 1000
    ctx.t_end = now
    return ctx


def test_miss_goes_direct_with_provider_figures() -> None:
    ctx = ctx_after()
    ctx.usage = Usage(input=120, output=30)
    e = entry_from_ctx(ctx)
    assert e.metacache.hit is False and e.metacache.query is None and e.metacache.tokens_saved == 0
    assert (e.routing_strategy, e.routing_reason) == ("direct", "provider:openai")
    assert e.model == "gpt-4o-2024-08-06" and e.requested_model == "gpt-4o"  # the seed: model from the provider
    assert e.provider == "openai" and e.deployment == "gpt-4o-2024-08-06"
    assert e.key_id == "team-a" and e.team == "research"
    assert e.latency_ms == pytest.approx(100.0, abs=0.5)
    assert e.ttfb_ms == pytest.approx(90.0, abs=0.5)
    assert e.upstream_ms == 80.0
    assert e.overhead_ms == pytest.approx(10.0, abs=0.5)  # ttfb - upstream
    assert (e.tokens_in, e.tokens_out, e.tokens_cached) == (120, 30, 0)
    assert abs(e.ts - time.time()) < 1.0


def test_cache_hit_per_seed() -> None:
    ctx = ctx_after(model="gpt-4o-mini", start_ago_ms=5.0, upstream_ms=None, ttfb_ago_ms=1.0)
    ctx.cache = CacheOutcome(phase=4, tier="semantic", similarity=0.93, query="what is the capital of France?",
                             tokens_saved=209, response=b"{}")
    ctx.cost = RequestCost(cost_usd=0.0, saved_cache_usd=0.0021)
    e = entry_from_ctx(ctx)
    assert e.metacache.hit is True
    assert e.metacache.query == "what is the capital of France?"
    assert e.metacache.tokens_saved == 209 and e.metacache.phase == 4 and e.metacache.similarity == 0.93
    assert (e.routing_strategy, e.routing_reason) == ("cache", "cache_hit:tier=semantic")
    assert e.model == "gpt-4o-mini"  # the seed: from the request body on a hit
    assert e.provider is None and e.upstream_ms is None
    assert e.overhead_ms == e.latency_ms  # no provider: all of it is the gateway's
    assert e.saved_cache_usd == 0.0021 and e.saved_usd == 0.0021


@pytest.mark.parametrize(("phase", "tier"), [(1, "intent"), (2, "near_miss"), (3, "exact"), (4, "semantic")])
def test_each_phase_names_its_tier(phase: int, tier: str) -> None:
    ctx = ctx_after(upstream_ms=None)
    ctx.cache = CacheOutcome(phase=phase, tier=tier, similarity=1.0, query="q", tokens_saved=0, response=b"{}")
    e = entry_from_ctx(ctx)
    assert e.metacache.tier == tier and e.routing_reason == f"cache_hit:tier={tier}"


def test_compressed_request() -> None:
    ctx = ctx_after()
    ctx.compression = CompressionRecord(tokens_before=1000, tokens_after=700, phrases_replaced=12, blocks_deduped=1)
    ctx.cost = RequestCost(cost_usd=0.004, saved_compression_usd=0.00075)
    e = entry_from_ctx(ctx)
    assert e.tokens_compressed == 300
    assert e.cost_usd == 0.004 and e.saved_compression_usd == 0.00075 and e.saved_usd == 0.00075


def test_provider_cached_openai_and_anthropic_usage() -> None:
    ctx = ctx_after()
    ctx.prompt_cache = PromptCacheRecord(injected=True, rule="large")
    ctx.cost = RequestCost(cost_usd=0.01, saved_provider_cache_usd=0.02)
    ctx.usage = parse_usage({"prompt_tokens": 3000, "completion_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 2048}})
    e = entry_from_ctx(ctx)
    assert (e.tokens_in, e.tokens_cached) == (3000, 2048)
    assert e.prompt_cache_injected is True and e.saved_provider_cache_usd == 0.02
    # Anthropic: input_tokens excludes the cached prefix; the entry counts the whole prompt.
    ctx.usage = parse_usage({"input_tokens": 50, "output_tokens": 7, "cache_read_input_tokens": 4000,
                             "cache_creation_input_tokens": 0})
    e = entry_from_ctx(ctx)
    assert (e.tokens_in, e.tokens_out, e.tokens_cached) == (4050, 7, 4000)
    ctx.usage = parse_usage({"input_tokens": 90, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 64}})
    e = entry_from_ctx(ctx)
    assert (e.tokens_in, e.tokens_out, e.tokens_cached) == (90, 5, 64)


def test_policy_flags_reach_the_entry() -> None:
    ctx = ctx_after()
    ctx.policy_flags.append(PolicyFlag(policy="pii", reason="email", direction="input"))
    ctx.policy_beside_ms = 1.25
    e = decoder.decode(encoder.encode(entry_from_ctx(ctx)))
    assert e.policy_flags == [PolicyFlag(policy="pii", reason="email", direction="input")]
    assert e.policy_beside_ms == 1.25


def test_rejected_before_any_provider() -> None:
    ctx = ctx_after(upstream_ms=None, ttfb_ago_ms=None, status=401)
    ctx.key = None
    ctx.error = "invalid_api_key"
    e = entry_from_ctx(ctx)
    assert (e.routing_strategy, e.routing_reason) == ("rejected", "invalid_api_key")
    assert e.status == 401 and e.key_id is None and e.provider is None


def test_upstream_error_and_fallback() -> None:
    ctx = ctx_after(status=502, ttfb_ago_ms=None)
    ctx.error = "upstream_error"
    e = entry_from_ctx(ctx)
    assert e.status == 502 and e.routing_strategy == "direct" and e.error == "upstream_error"
    assert e.overhead_ms == pytest.approx(e.latency_ms - 80.0, abs=0.01)
    fb = ctx_after()
    fb.fallback, fb.attempts = True, 3
    e = entry_from_ctx(fb)
    assert (e.routing_strategy, e.routing_reason) == ("fallback", "fallback:openai") and e.attempts == 3


def test_entry_round_trips_and_never_holds_the_key() -> None:
    e = entry_from_ctx(ctx_after())
    raw = encoder.encode(e)
    assert b"sk-secret" not in raw
    assert decoder.decode(raw) == e
    assert isinstance(decoder.decode(raw), AuditEntry)
    assert b'"metacache":{"hit":false' in raw
