"""The MetaCache's types: settings, requests, hits, stored entries, the stats it keeps, and what it
needs from an embedder and a verifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec
import numpy as np

TIERS = {1: "intent", 2: "near_miss", 3: "exact", 4: "semantic"}


class CacheSettings(msgspec.Struct, kw_only=True):
    enabled: bool = True
    semantic_threshold: float = 0.90
    near_miss_threshold: float = 0.85  # Jaccard of normalised token sets, see intent.py for why
    ttl_s: float = 3600.0
    max_entries: int = 10_000
    only_temperature_zero: bool = True
    scope: Literal["key", "shared"] = "key"
    semantic: bool = True  # phase 4 on (also needs an embedder)
    embed_budget_ms: float = 50.0
    verifier: bool = True  # off only for the quality benchmark: phases 2 and 4 then trust the score
    near_miss_window: int = 128  # recent intents per partition compared by phase 2
    knn_k: int = 4  # phase-4 candidates tried (best first) before giving up
    l1_entries: int = 2048
    # When the lookup could not embed, the write-back tries within the same budget: it must never
    # queue ahead of lookups, which can turn into hits (the vector is otherwise reused, never redone).
    write_embed_budget_ms: float = 15.0
    # The learned verifier's bound on served answers that are wrong (its held-out validation curve
    # picks the acceptance threshold); the rule-based verifier ignores it.
    max_wrong_rate: float = 0.01


class CacheRequest(msgspec.Struct, kw_only=True):
    tenant: str  # the key id; ignored under scope "shared"
    endpoint: str  # "chat" | "messages" | "completions"
    body: dict[str, Any]
    no_cache: bool = False  # Cache-Control: no-cache: skip the lookup (still written back)
    no_store: bool = False  # Cache-Control: no-store: never written
    semantic_threshold: float | None = None  # the route's override, resolved at start-up
    scope: Literal["key", "shared"] | None = None  # the route's override


class CacheHit(msgspec.Struct):
    phase: int
    tier: str
    similarity: float
    query: str  # the stored query that matched (for the audit log)
    response: bytes  # the stored non-streamed JSON body in the endpoint's protocol
    tokens_saved: int


class Entry(msgspec.Struct, array_like=True):
    query: str
    intent: str
    response: bytes
    tokens_saved: int
    expires: float  # wall clock


class Verdict(Protocol):
    @property
    def ok(self) -> bool: ...


class Embedder(Protocol):
    """What the cache needs from gateway.embed.session.Embedder."""

    async def embed_one(self, text: str, *, budget_ms: float) -> np.ndarray | None: ...


Verifier = Callable[[str, str, float | None], Verdict]
ENTRY_CODEC = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Entry))


@dataclass(slots=True)
class PhaseStats:
    lookups: int = 0
    hits: int = 0
    skips: int = 0  # phase not applicable (structured text, no embedder, saturated, store down)
    vetoes: int = 0  # a candidate above the threshold that the verifier refused


@dataclass(slots=True)
class CacheStats:
    phases: dict[int, PhaseStats] = field(default_factory=lambda: {p: PhaseStats() for p in TIERS})
    lookups: int = 0
    hits: int = 0
    not_cacheable: int = 0
    stored: int = 0
    not_stored: int = 0  # errors, truncated answers, no-store
    evicted: int = 0
    store_errors: int = 0
    overload_skips: int = 0  # phase 4 skipped because the worker's loop lagged
    semantic_searches: int = 0  # phase-4 lookups that got their embedding and searched the index
