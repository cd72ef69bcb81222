"""The one response writer: provider answers (plain or streamed, translated when needed), cache hits
replayed, and errors, each with the same headers and through the same output policies.

Streams pass through chunk by chunk; an incremental SSE parser taps them for usage (and, when a part
asked for it, keeps the events so the answer can be assembled and cached). A client that goes away
mid-stream cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import msgspec
import structlog

from gateway.cache.replay import replay_anthropic, replay_openai
from gateway.costs.prices import ModelPrice, PriceTable, price_tokens
from gateway.errors import GatewayError, UpstreamError, render
from gateway.pipeline.context import CacheOutcome, Events, RequestContext
from gateway.pipeline.stream_cost import StreamCost
from gateway.protocol.sse import SSEParser
from gateway.protocol.usage import parse_usage
from gateway.providers.translate import StreamTranslator, Translator
from gateway.providers.upstream import UpstreamResponse, passback_headers

log = structlog.get_logger("gateway.respond")
_dec = msgspec.json.Decoder()
JSON_TYPE = "application/json"
_STAMPED = frozenset({"chat", "completions", "messages"})  # streams whose usage event gets the cost
SSE_TYPE = "text/event-stream"


def response_headers(ctx: RequestContext, upstream: Mapping[str, str] | None,
                     content_type: str) -> list[tuple[str, str]]:
    headers = [("content-type", content_type), ("x-gateway-request-id", ctx.request_id)]
    if upstream is not None:
        headers.extend(passback_headers(upstream))
    own = ctx.own_headers  # the gateway's own, e.g. its rate limits: ours win over the provider's
    if own:
        names = {name for name, _ in own}
        headers = [h for h in headers if h[0] not in names]
        headers.extend(own)
    return headers


class StreamTap:
    """Watches a passing stream: usage always; every event when `keep` is given."""

    __slots__ = ("keep", "parser", "usage")

    def __init__(self, keep: Events | None) -> None:
        self.parser = SSEParser()
        self.keep = keep
        self.usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        # Skip parsing only a chunk of whole events without usage: a chunk ending mid-event must go
        # through the parser, or the rest of that event (perhaps the usage) would be cut off.
        if self.keep is None and not self.parser.pending and b'"usage"' not in chunk and chunk.endswith(b"\n\n"):
            return
        for name, data in self.parser.feed(chunk):
            if self.keep is not None:
                self.keep.append((name, data))
            if b'"usage"' in data:
                self._take_usage(data)

    def _take_usage(self, data: bytes) -> None:
        try:
            obj = _dec.decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage") or (obj.get("message") or {}).get("usage") or \
            (obj.get("response") or {}).get("usage")
        if isinstance(usage, dict):
            self.usage.update(usage)


class Responder:
    """Writes every answer the client gets. Built once per worker, with the price table that gives a
    plain answer its `x-gateway-cost-usd` (the ledger's own figure for it)."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices
        self._price: dict[tuple[str, str], ModelPrice | None] = {}  # looked up once per model

    def _price_of(self, upstream: str, requested: str) -> ModelPrice | None:
        key = (upstream, requested)
        if key not in self._price:
            assert self.prices is not None
            found = self.prices.lookup(upstream) or self.prices.lookup(requested)
            if len(self._price) > 10_000:
                self._price.clear()  # bounded: wildcard routes see any name a client sends
            self._price[key] = found[1] if found is not None else None
        return self._price[key]

    def _figures(self, ctx: RequestContext, read_ms: float) -> list[tuple[str, str]]:
        """What this answer cost at list prices, and what the gateway itself added to it."""
        out: list[tuple[str, str]] = []
        usage, target = ctx.usage, ctx.target
        if self.prices is not None and usage is not None and target is not None:
            price = self._price_of(target.model, ctx.model)
            if price is not None:
                out.append(("x-gateway-cost-usd", f"{price_tokens(usage, price):.8f}"))
        own = ctx.elapsed_ms() - ctx.upstream_ms - read_ms
        out.append(("x-gateway-overhead-ms", f"{max(0.0, own):.2f}"))
        return out

    def _stream_cost(self, ctx: RequestContext) -> StreamCost | None:
        """A priced stream's cost goes on its usage event (stream_cost.py); unpriced ones pass as they are."""
        target = ctx.target
        if self.prices is None or target is None or ctx.endpoint.name not in _STAMPED:
            return None
        price = self._price_of(target.model, ctx.model)
        return StreamCost(price, ctx.endpoint.protocol == "anthropic") if price is not None else None

    async def plain(self, ctx: RequestContext, proto: Any, resp: UpstreamResponse, translator: Translator) -> None:
        """Read the whole answer, translate it if needed, pass it through the output policies, send it."""
        t_read = time.perf_counter()
        raw = await resp.read()
        read_ms = (time.perf_counter() - t_read) * 1000.0
        try:
            body, ctx.usage = translator.response(raw, ctx.model)
        except msgspec.DecodeError:
            body, ctx.usage = raw, None  # not JSON: passed through as it came
        if ctx.output_filter is not None:
            body = await ctx.output_filter.check_plain(ctx, body)  # may raise: nothing was sent yet
        ctx.status = resp.status
        ctx.t_first_byte = time.perf_counter()
        ctype = resp.headers.get("content-type", JSON_TYPE)
        headers = response_headers(ctx, resp.headers, ctype)
        headers.extend(self._figures(ctx, read_ms))
        proto.response_bytes(resp.status, headers, body)
        ctx.response = body
        ctx.t_end = ctx.t_first_byte

    async def stream(self, ctx: RequestContext, proto: Any, resp: UpstreamResponse, translator: Translator) -> None:
        keep: Events | None = [] if ctx.collect_stream else None
        filtered = ctx.output_filter is not None
        translated = translator.stream(ctx.model, ctx.include_usage, None if filtered else keep)
        ctype = resp.headers.get("content-type", SSE_TYPE) if translated is None else SSE_TYPE + "; charset=utf-8"
        headers = response_headers(ctx, resp.headers, ctype)
        headers.append(("cache-control", "no-cache"))
        ctx.status = resp.status
        transport = proto.response_stream(resp.status, headers)
        ctx.t_first_byte = time.perf_counter()
        chunks = resp.chunks()
        if translated is not None:
            chunks = _translate(chunks, translated)
        if ctx.output_filter is not None:
            # Buffers and checks before passing chunks on: what the client reads, whatever the
            # provider's wire (Gemini's events, Bedrock's binary frames), so it is kept after it.
            chunks = ctx.output_filter.stream(ctx, chunks)
        tap = StreamTap(keep) if translated is None or filtered else None
        pump = asyncio.ensure_future(_pump(chunks, transport, tap, translated, self._stream_cost(ctx)))
        gone = asyncio.ensure_future(proto.client_disconnect())
        try:
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not gone.done():
                gone.cancel()
        ctx.events = keep
        ctx.t_end = time.perf_counter()
        if pump not in done:
            # The client went away: stop reading, close the upstream connection (cancels the call).
            pump.cancel()
            resp.close()
            ctx.error = "client_disconnected"
            ctx.status = 499
            return
        exc = pump.exception()
        if exc is not None:
            resp.close()
            ctx.error = f"stream_interrupted:{type(exc).__name__}"
            if isinstance(exc, (TimeoutError, UpstreamError)):
                log.warning("upstream_stream_interrupted", request_id=ctx.request_id,
                            provider=ctx.target.provider.name if ctx.target else None, error=type(exc).__name__)
            elif not isinstance(exc, GatewayError):
                log.error("stream_failed", request_id=ctx.request_id, error=repr(exc))
            return
        ctx.usage = translated.usage if translated is not None else parse_usage(tap.usage if tap else None)

    async def replay(self, ctx: RequestContext, proto: Any, hit: CacheOutcome) -> None:
        """A cache hit: the same input checks, output policies and headers as an upstream answer."""
        if ctx.guards:  # input policies running beside the call must pass before a hit is served too
            guards, ctx.guards = ctx.guards, []
            await asyncio.gather(*guards)
        response = hit.response
        if ctx.output_filter is not None:  # policies added since it was stored; plain or streamed alike
            response = await ctx.output_filter.check_plain(ctx, response)
        ctx.cache = hit
        ctx.status = 200
        headers = [*response_headers(ctx, None, JSON_TYPE if not ctx.stream else SSE_TYPE),
                   ("x-cache-hit", "true"), ("x-cache-similarity", f"{hit.similarity:.4f}"),
                   ("x-tokens-saved", str(hit.tokens_saved)), ("x-cache-phase", str(hit.phase)),
                   ("x-gateway-cost-usd", "0")]  # answered without the provider
        ctx.t_first_byte = time.perf_counter()
        if not ctx.stream:
            proto.response_bytes(200, headers, response)
        else:
            frames: Iterable[bytes] = (replay_anthropic(response) if ctx.endpoint.protocol == "anthropic"
                                       else replay_openai(response, include_usage=ctx.include_usage))
            headers.append(("cache-control", "no-cache"))
            transport = proto.response_stream(200, headers)
            await transport.send_bytes(b"".join(frames))
        ctx.response = response
        ctx.t_end = time.perf_counter()

    def error(self, ctx: RequestContext, proto: Any, err: GatewayError) -> None:
        """An error in the caller's protocol shape (nothing, once the answer has started)."""
        if ctx.t_first_byte:
            return
        status, body = render(err, ctx.endpoint.protocol)
        ctx.status = status
        ctx.error = err.code or err.type
        headers = [("content-type", JSON_TYPE), ("x-gateway-request-id", ctx.request_id)]
        headers.extend((k.lower(), v) for k, v in err.headers.items())
        proto.response_bytes(status, headers, body)
        ctx.t_end = time.perf_counter()


async def _translate(chunks: AsyncIterator[bytes], translated: StreamTranslator) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        out = translated.feed(chunk)
        if out:
            yield out
    yield translated.finish()


async def _pump(chunks: AsyncIterator[bytes], transport: Any, tap: StreamTap | None,
                translated: StreamTranslator | None, cost: StreamCost | None = None) -> None:
    """Send what the client reads (already translated and filtered); with a price, the usage event
    carries the stream's cost, priced from the usage the ledger uses."""
    if cost is None:
        async for chunk in chunks:
            await transport.send_bytes(chunk)
            if tap is not None:
                tap.feed(chunk)
        return
    try:
        async for chunk in chunks:
            out = cost.feed(chunk)
            if out:
                await transport.send_bytes(out)
            if tap is not None:
                tap.feed(chunk)  # the bytes before our field: the cache keeps the answer without it
    except Exception:
        await _release(transport, cost)
        raise
    usage = translated.usage if translated is not None else parse_usage(tap.usage if tap is not None else None)
    await transport.send_bytes(cost.finish(usage))


async def _release(transport: Any, cost: StreamCost) -> None:
    """The upstream broke after the usage event: the client still gets what arrived, without a figure."""
    rest = cost.finish(None)
    if rest:
        with contextlib.suppress(Exception):
            await transport.send_bytes(rest)
