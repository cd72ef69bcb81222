"""The per-request context: typed slots that each stage fills in and later stages read.

Every value one stage hands to another has a named, typed slot here; there is no untyped bag. The
small records below (a cache hit, compression and prompt-cache figures, policy flags) are the
pipeline's vocabulary, so the parts that write them and the parts that read them (ledger, audit
log, metrics) share one definition.
"""

from __future__ import annotations

import asyncio
import os
import time
from itertools import count
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from gateway.observe.tracing import NULL_SPAN, RequestSpan
from gateway.protocol.usage import Usage
from gateway.protocol.views import RequestView, decode_any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gateway.costs.ledger import RequestCost
    from gateway.governance.auth import KeyRecord
    from gateway.governance.limits import Reservation
    from gateway.providers.routing import Plan, Target

Wire = Literal["openai", "anthropic"]
Events = list[tuple[str | None, bytes]]  # SSE events (name, data) as they passed


class EndpointSpec(msgspec.Struct, frozen=True):
    name: Literal["chat", "completions", "embeddings", "responses", "messages"]
    protocol: Wire
    streamable: bool = True


class CacheOutcome(msgspec.Struct, frozen=True):
    """A MetaCache hit: which phase answered, how close the match was, and the stored answer."""

    phase: int
    tier: str
    similarity: float
    query: str
    tokens_saved: int
    response: bytes


class CompressionRecord(msgspec.Struct):
    """What compression did to this request (token counts are filled in after the answer)."""

    phrases_replaced: int = 0
    blocks_deduped: int = 0
    json_compacted: int = 0  # tool results and arguments re-serialised compactly
    outputs_referenced: int = 0  # tool outputs sent as a reference to an identical earlier one
    tokens_before: int = 0
    tokens_after: int = 0
    compaction_before: int = 0  # the lossless compaction layer, counted apart
    compaction_after: int = 0
    changed_texts: list[tuple[str, str]] = msgspec.field(default_factory=list)
    compaction_texts: list[tuple[str, str]] = msgspec.field(default_factory=list)

    @property
    def tokens_saved(self) -> int:
        return max(0, self.tokens_before - self.tokens_after)

    @property
    def compaction_saved(self) -> int:
        return max(0, self.compaction_before - self.compaction_after)


class PromptCacheRecord(msgspec.Struct):
    """Provider prompt-cache markers: whether they were injected, by which rule."""

    injected: bool = False
    rule: str | None = None
    system_hash: str | None = None
    mark_translated: bool = False  # a chat request sent to Anthropic: mark the translated body


class PolicyFlag(msgspec.Struct, frozen=True):
    policy: str
    reason: str
    direction: str


class OutputFilter(Protocol):
    """Output policies: may rewrite or block an answer (upstream or cached, plain or streamed)."""

    async def check_plain(self, ctx: RequestContext, body: bytes) -> bytes: ...

    def stream(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...


class AfterTask(Protocol):
    """Work a part leaves for after the answer (the cache's write-back)."""

    async def run(self) -> None: ...


_ids = count(1)
_ID_PREFIX = ""


def _new_prefix() -> None:
    global _ID_PREFIX, _ids
    _ID_PREFIX = f"gw-{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-"
    _ids = count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # workers forked after import get their own prefix


def new_request_id() -> str:
    # Unique per worker process without the cost of uuid4 on every request.
    return f"{_ID_PREFIX}{next(_ids):x}"


class RequestContext:
    __slots__ = (
        "attempts",
        "body",
        "cache",
        "changed",
        "collect_stream",
        "compression",
        "cost",
        "data",
        "endpoint",
        "error",
        "events",
        "fallback",
        "guards",
        "headers",
        "include_usage",
        "key",
        "model",
        "output_filter",
        "own_headers",
        "plan",
        "policy_beside_ms",
        "policy_flags",
        "prompt_cache",
        "request_id",
        "reservation",
        "response",
        "span",
        "status",
        "stream",
        "t_end",
        "t_first_byte",
        "t_start",
        "t_upstream",
        "target",
        "upstream_ms",
        "usage",
        "view",
        "write_back",
    )

    def __init__(self, endpoint: EndpointSpec, headers: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.headers = headers
        self.request_id = new_request_id()
        self.t_start = time.perf_counter()
        self.span: RequestSpan = NULL_SPAN  # this request's trace (gateway.observe.tracing)
        # 1-2 receive, parse
        self.body = b""  # the raw request bytes, forwarded untouched when nothing changes
        self.view: RequestView | None = None
        self.data: dict[str, Any] | None = None  # the generic form, decoded only when a stage needs it
        self.changed = False  # a stage modified `data`: re-encode before forwarding
        self.model = ""
        self.stream = False
        self.include_usage = False
        # 3 auth, 4 route, 5 limits and policies
        self.key: KeyRecord | None = None
        self.plan: Plan | None = None
        self.reservation: Reservation | None = None
        self.own_headers: list[tuple[str, str]] = []  # the gateway's own answer headers (rate limits)
        self.guards: list[asyncio.Future[None]] = []  # input policies running beside the upstream call
        self.output_filter: OutputFilter | None = None
        self.policy_flags: list[PolicyFlag] = []
        self.policy_beside_ms: float | None = None
        # 6 cache, 7 transform
        self.cache: CacheOutcome | None = None
        self.collect_stream = False  # keep a streamed answer's events (write-back, archive, usage estimate)
        self.write_back: AfterTask | None = None
        self.compression: CompressionRecord | None = None
        self.prompt_cache: PromptCacheRecord | None = None
        # 8-9 forward and respond
        self.target: Target | None = None
        self.attempts = 0
        self.fallback = False
        self.status = 0
        self.error: str | None = None
        self.t_upstream = 0.0  # when the first upstream attempt was sent
        self.upstream_ms = 0.0  # until the provider's response headers (last attempt)
        self.t_first_byte = 0.0  # when the first byte went to the client
        self.t_end = 0.0  # when the answer was complete
        self.response: bytes | None = None  # a plain answer as sent
        self.events: Events | None = None  # a streamed answer's events, when collected
        # 10 after
        self.usage: Usage | None = None
        self.cost: RequestCost | None = None

    @property
    def cache_hit(self) -> bool:
        return self.cache is not None

    def json(self) -> dict[str, Any]:
        """The request as a dict (decoded once, on first use)."""
        if self.data is None:
            self.data = decode_any(self.body)
        return self.data

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t_start) * 1000.0
