"""The per-request context every pipeline stage reads and fills in."""

from __future__ import annotations

import os
import time
from itertools import count
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gateway.governance.auth import KeyRecord
from gateway.protocol.views import RequestView, decode_any

if TYPE_CHECKING:
    from gateway.providers.routing import Target

Protocol = Literal["openai", "anthropic"]


class EndpointSpec(msgspec.Struct, frozen=True):
    name: Literal["chat", "completions", "embeddings", "responses", "messages"]
    protocol: Protocol
    streamable: bool = True


_ids = count(1)
_ID_PREFIX = f"gw-{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-"


def new_request_id() -> str:
    # Unique per worker process without the cost of uuid4 on every request.
    return f"{_ID_PREFIX}{next(_ids):x}"


class RequestContext:
    __slots__ = (
        "after_hooks", "attempts", "body", "cache_hit", "cache_phase", "cache_similarity", "changed", "data",
        "endpoint", "error", "extra", "fallback", "guards", "headers", "include_usage", "key", "model", "request_id",
        "status", "stream", "t_first_byte", "t_start", "t_upstream", "target", "upstream_ms", "usage", "view",
    )

    def __init__(self, endpoint: EndpointSpec, headers: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.headers = headers
        self.request_id = new_request_id()
        self.t_start = time.perf_counter()
        self.body = b""  # the raw request bytes, forwarded untouched when nothing changes
        self.view: RequestView | None = None
        self.data: dict[str, Any] | None = None  # the generic form, decoded only when a stage needs it
        self.changed = False  # a stage modified `data`: re-encode before forwarding
        self.key: KeyRecord | None = None
        self.model = ""
        self.stream = False
        self.include_usage = False
        self.target: Target | None = None
        self.attempts = 0
        self.fallback = False
        self.status = 0
        self.error: str | None = None
        self.t_upstream = 0.0  # when the first upstream attempt was sent
        self.upstream_ms = 0.0  # until the provider's response headers (last attempt)
        self.t_first_byte = 0.0  # when the first byte went to the client
        self.usage: dict[str, Any] | None = None
        self.cache_hit = False
        self.cache_phase = 0
        self.cache_similarity = 0.0
        self.after_hooks: list[Any] = []
        # Input policies running beside the upstream call (asyncio tasks raising GatewayError to block).
        self.guards: list[Any] = []
        self.extra: dict[str, Any] = {}  # stage-owned values (cache handle, compression figures, ...)

    def json(self) -> dict[str, Any]:
        """The request as a dict (decoded once, on first use)."""
        if self.data is None:
            self.data = decode_any(self.body)
        return self.data

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t_start) * 1000.0
