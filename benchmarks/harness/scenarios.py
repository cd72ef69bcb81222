"""The scenarios and their load levels: overhead, throughput, cache modes, streaming, feature costs.

A Plan lists the levels of one run; `levels_for(target)` says which a target gets. Request bodies
are templates for the driver: "{ID}" becomes a unique id, "{WORDS}" six words chosen by it.
Pass-through bodies are what an application sends: a one-line system prompt, a user question of
about thirty words (unique per request), `max_tokens` 256 and `temperature` 0.2, so the gateway's
cache (temperature 0 only by default) never answers them, and every one differs anyway. Only the
cache modes send temperature 0, with short prompts, on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from benchmarks.harness.targets import MODEL
from benchmarks.harness.variants import ALL_ON, COMPANY, VARIANTS

OVERHEAD, THROUGHPUT, CACHE_MISS, CACHE_MIXED, STREAM = "overhead", "throughput", "miss", "mixed", "stream"
FEATURES = "features"  # the gateway variants (variants.py) at one rate, measured like the overhead levels
OVERLOAD = "overload"  # open loop past the target's own measured capacity: does it shed or queue?
SCENARIOS = (OVERHEAD, FEATURES, THROUGHPUT, OVERLOAD, CACHE_MISS, CACHE_MIXED, STREAM)

# Which targets run which scenario. The cache modes need the gateway's cache; the direct call at the
# same rates is their baseline. nginx, LiteLLM and Portkey run with their defaults (no cache).
CACHE_TARGETS = ("gateway",)
BASELINE = "direct"
FORWARDER = "forwarder"  # the calibration point: the featureless Granian + msgspec + aiohttp forwarder
# Targets that get the past-capacity level (the gateway's admission control is what it measures).
OVERLOAD_TARGETS = (ALL_ON, COMPANY)


@dataclass(frozen=True)
class Level:
    scenario: str
    mode: str  # "open" (a fixed rate) | "closed" (constant connections)
    value: int  # the rate in RPS, or the number of connections; overload: percent of measured capacity

    @property
    def key(self) -> str:
        unit = "pct" if self.scenario == OVERLOAD else "rps" if self.mode == "open" else "conn"
        return f"{self.scenario}@{self.value}{unit}"


@dataclass
class Plan:
    name: str
    level_s: float
    warmup_s: float
    timeout_s: float
    overhead_rates: list[int]
    connections: list[int]
    miss_rates: list[int]
    mixed_rates: list[int]
    stream_rate: int
    targets: list[str]
    feature_rate: int = 500  # the variants' one open-loop level (pass-through bodies, like the overhead ones)
    overload_pct: int = 150  # the past-capacity level: this share of the target's best closed-loop RPS
    wrk_connections: int = 300  # the wrk cross-check of the throughput table (0: none)
    mock_latency_ms: int = 60
    stream_chunks: int = 50
    chunk_interval_ms: float = 2.0
    open_max_connections: int = 2000
    settings: dict[str, object] = field(default_factory=dict)
    # Only these scenarios (`run --scenarios throughput,overload`); empty: all of them.
    only: frozenset[str] = frozenset()

    def levels_for(self, target: str) -> list[Level]:
        levels = self._levels_for(target)
        return [lv for lv in levels if lv.scenario in self.only] if self.only else levels

    def _levels_for(self, target: str) -> list[Level]:
        if target in VARIANTS:
            return [Level(FEATURES, "open", self.feature_rate)]
        levels = [Level(OVERHEAD, "open", r) for r in self.overhead_rates]
        if (
            target in (BASELINE, ALL_ON, COMPANY)
            and self.feature_rate not in self.overhead_rates
            and any(t in VARIANTS for t in self.targets)
        ):
            # The variants' baseline and the everything-on figure, unless an overhead level has them.
            levels.append(Level(FEATURES, "open", self.feature_rate))
        levels += [Level(THROUGHPUT, "closed", c) for c in self.connections]
        if target in OVERLOAD_TARGETS and self.connections and self.overload_pct:
            levels.append(Level(OVERLOAD, "open", self.overload_pct))  # its rate comes from the levels above
        if target in CACHE_TARGETS:
            levels += [Level(CACHE_MISS, "open", r) for r in self.miss_rates]
            levels += [Level(CACHE_MIXED, "open", r) for r in self.mixed_rates]
        if target == BASELINE:
            # The direct call at each cache rate the overhead levels do not already cover.
            extra = sorted(set(self.miss_rates + self.mixed_rates) - set(self.overhead_rates))
            levels += [Level(CACHE_MISS, "open", r) for r in extra]
        if target != "gateway-2w":
            levels.append(Level(STREAM, "open", self.stream_rate))
        return levels


def full_plan() -> Plan:
    """`make bench`: every target and every gateway variant, 4 s levels after 1 s warm-up; about 11
    minutes on 2 cores. The forwarder comes right before the gateway and the variants right after the
    company configuration, so ratios and feature costs compare figures taken minutes apart at most."""
    return Plan(
        name="full",
        level_s=4.0,
        warmup_s=1.0,
        timeout_s=10.0,
        overhead_rates=[100, 300, 500, 1000],
        connections=[50, 150, 300, 1000],
        miss_rates=[50, 150, 500],
        mixed_rates=[100, 500],
        stream_rate=100,
        targets=[
            "direct",
            FORWARDER,
            "gateway",
            COMPANY,
            *VARIANTS,
            "gateway-2w",
            "nginx",
            "litellm",
            "litellm-1.82.6",
            "portkey",
        ],
    )


def quick_plan() -> Plan:
    """`make bench-quick` (CI): every scenario briefly for the gateway (embedded defaults and the company
    configuration), the forwarder, direct and nginx, plus the bare and the compliance variants so the
    feature-cost path (GATEWAY_DISABLE, governance, the compliance service) runs too."""
    return Plan(
        name="quick",
        level_s=1.5,
        warmup_s=0.5,
        timeout_s=5.0,
        overhead_rates=[100, 300, 500, 1000],
        connections=[50, 150, 300, 1000],
        miss_rates=[50, 300],
        mixed_rates=[300],
        stream_rate=50,
        targets=["direct", FORWARDER, "gateway", COMPANY, "gateway-bare", "gateway-compliance", "nginx"],
    )


# ---- request bodies ------------------------------------------------------------------------------


def _chat(content: str, **extra: object) -> bytes:
    return msgspec.json.encode(
        {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 32, **extra}
    )


# The pass-through request: one system line and a question of 33 words, six of them ({WORDS}) and the
# id chosen per request. Nothing in it is personal data or an injection: every policy passes it.
SYSTEM_PROMPT = "You are a helpful assistant for the support team of a software company; answer briefly."
QUESTION = (
    "Request {ID}: I am planning a small project about {WORDS}. Which of these should I start with, "
    "how do they relate, and what mistakes do beginners usually make?"
)
PASSTHROUGH_MAX_TOKENS = 256
PASSTHROUGH_TEMPERATURE = 0.2  # above 0: the cache stage does not look these up (only_temperature_zero)


def _realistic(**extra: object) -> bytes:
    return msgspec.json.encode(
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}],
            "max_tokens": PASSTHROUGH_MAX_TOKENS,
            "temperature": PASSTHROUGH_TEMPERATURE,
            **extra,
        }
    )


def passthrough_body() -> bytes:
    """Unique per request, realistic in size and shape, and not cacheable (temperature 0.2)."""
    return _realistic()


def cache_body() -> bytes:
    """Unique and cacheable (temperature 0): every MetaCache phase runs and misses."""
    return _chat("Write one sentence about {WORDS} (note {ID}).", temperature=0)


def anchor_body(nonce: str) -> bytes:
    """The repeated prompt of the mixed mode (its nonce keeps earlier runs' entries out)."""
    return _chat(f"What is the capital of France? Answer in one word. (run {nonce})", temperature=0)


def stream_body() -> bytes:
    """The pass-through request, streamed."""
    return _realistic(stream=True)


def body_for(level: Level, nonce: str) -> tuple[bytes, bytes | None, int]:
    """(template, repeated body or None, percent of requests that send the repeated body)."""
    if level.scenario == STREAM:
        return stream_body(), None, 0
    if level.scenario == CACHE_MIXED:
        return cache_body(), anchor_body(nonce), 50
    if level.scenario == CACHE_MISS:
        return cache_body(), None, 0
    return passthrough_body(), None, 0
