"""The MetaCache's types: settings, requests, hits, stored entries, the stats it keeps, and what it
needs from an embedder and a verifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec
import numpy as np

from gateway.cache.keys import Keys
from gateway.config import CacheConfig

TIERS = {1: "intent", 2: "near_miss", 3: "exact", 4: "semantic"}


# One settings struct for the cache: the `cache:` section of the configuration itself.
CacheSettings = CacheConfig


class CacheRequest(msgspec.Struct, kw_only=True):
    tenant: str  # the key id; ignored under scope "shared"
    endpoint: str  # "chat" | "messages" | "completions" | "embeddings"
    body: dict[str, Any]
    no_cache: bool = False  # Cache-Control: no-cache: skip the lookup (still written back)
    no_store: bool = False  # Cache-Control: no-store: never written
    semantic_threshold: float | None = None  # the route's override, resolved at start-up
    scope: Literal["key", "shared"] | None = None  # the route's override
    keys: Keys | None = None  # MetaCache.keys, computed once per request


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
    unjudged: int = 0  # lookups with candidates the verifier could not judge within its budget


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
