"""Writing a provider's answer to the client: plain or streamed, translated when needed.

Streams pass through chunk by chunk; an incremental SSE parser taps them for usage (and, when a
later stage asked for it, keeps the events so the answer can be assembled and cached). A client
that goes away mid-stream cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import msgspec
import structlog

from gateway.errors import UpstreamError
from gateway.pipeline.context import RequestContext
from gateway.protocol.sse import DONE, SSEParser, encode_event
from gateway.providers.translate import AnthropicToChatStream, anthropic_to_chat, usage_to_openai
from gateway.providers.upstream import map_client_errors, passback_headers

log = structlog.get_logger("gateway.pipeline.respond")
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None


_usage_dec = msgspec.json.Decoder(_UsageOnly)


def response_headers(ctx: RequestContext, upstream: aiohttp.ClientResponse | None,
                     content_type: str) -> list[tuple[str, str]]:
    headers = [("content-type", content_type), ("x-gateway-request-id", ctx.request_id)]
    if upstream is not None:
        headers.extend(passback_headers(upstream.headers))
    own = ctx.extra.get("response_headers")  # set by stages, e.g. the gateway's own rate limits
    if own:
        names = {name for name, _ in own}
        headers = [h for h in headers if h[0] not in names]  # ours win over the provider's
        headers.extend(own)
    return headers


class OutputFilter(Protocol):
    """Output policies (set by a stage on ctx.extra["output_filter"]): may rewrite or block the answer."""

    async def check_plain(self, ctx: RequestContext, body: bytes) -> bytes: ...

    def stream(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...


async def _upstream_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_any():
        yield chunk


async def send_plain(ctx: RequestContext, proto: Any, resp: aiohttp.ClientResponse) -> bytes:
    """Read the whole answer, translate it if needed, send it; returns the bytes sent."""
    assert ctx.target is not None
    with map_client_errors(ctx.target.provider.name):
        body = await resp.read()
    output_filter: OutputFilter | None = ctx.extra.get("output_filter")
    if ctx.target.translate:
        data = _dec.decode(body)
        body = _enc.encode(anthropic_to_chat(data, ctx.model))
        ctx.usage = usage_to_openai(data.get("usage") or {})
        ctx.extra["upstream_usage"] = data.get("usage")  # keeps cache writes apart, for the ledger
    else:
        try:
            ctx.usage = _usage_dec.decode(body).usage
        except msgspec.DecodeError:
            ctx.usage = None
    if output_filter is not None:
        body = await output_filter.check_plain(ctx, body)  # may raise: nothing was sent yet
    ctx.status = resp.status
    ctx.t_first_byte = time.perf_counter()
    ctx_type = resp.headers.get("content-type", "application/json")
    proto.response_bytes(resp.status, response_headers(ctx, resp, ctx_type), body)
    return body


class StreamTap:
    """Watches a passing stream: usage always; every event when `collect` is set."""

    __slots__ = ("collect", "events", "parser", "usage")

    def __init__(self, collect: bool) -> None:
        self.parser = SSEParser()
        self.collect = collect
        self.events: list[tuple[str | None, bytes]] = []
        self.usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        # Skip parsing only a chunk of whole events without usage: a chunk ending mid-event must go
        # through the parser, or the rest of that event (perhaps the usage) would be cut off.
        if not self.collect and not self.parser._buf and b'"usage"' not in chunk and chunk.endswith(b"\n\n"):
            return
        for name, data in self.parser.feed(chunk):
            if self.collect:
                self.events.append((name, data))
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


async def _pump_passthrough(chunks: AsyncIterator[bytes], transport: Any, tap: StreamTap) -> None:
    async for chunk in chunks:
        await transport.send_bytes(chunk)
        tap.feed(chunk)


async def _pump_translated(ctx: RequestContext, chunks: AsyncIterator[bytes], transport: Any,
                           tap: StreamTap) -> None:
    translator = AnthropicToChatStream(ctx.model, ctx.include_usage)
    parser = SSEParser()
    async for chunk in chunks:
        out = []
        for name, data in parser.feed(chunk):
            try:
                event = _dec.decode(data)
            except msgspec.DecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("type") == "error":
                out.append(encode_event(_enc.encode({"error": event.get("error")})))
                continue
            for obj in translator.feed(name, event):
                encoded = _enc.encode(obj)
                out.append(encode_event(encoded))
                if tap.collect:
                    tap.events.append((None, encoded))
        if out:
            await transport.send_bytes(b"".join(out))
    await transport.send_bytes(DONE)
    tap.usage = usage_to_openai(translator.usage)
    ctx.extra["upstream_usage"] = translator.usage


async def send_stream(ctx: RequestContext, proto: Any, resp: aiohttp.ClientResponse, tap: StreamTap) -> None:
    assert ctx.target is not None
    ctype = "text/event-stream" if not ctx.target.translate else "text/event-stream; charset=utf-8"
    headers = response_headers(ctx, resp, resp.headers.get("content-type", ctype) if not ctx.target.translate
                               else ctype)
    headers.append(("cache-control", "no-cache"))
    ctx.status = resp.status
    transport = proto.response_stream(resp.status, headers)
    ctx.t_first_byte = time.perf_counter()
    chunks = _upstream_chunks(resp)
    output_filter: OutputFilter | None = ctx.extra.get("output_filter")
    if output_filter is not None:
        chunks = output_filter.stream(ctx, chunks)  # buffers and checks before passing chunks on
    pump_coro = (_pump_translated(ctx, chunks, transport, tap) if ctx.target.translate
                 else _pump_passthrough(chunks, transport, tap))
    pump = asyncio.ensure_future(pump_coro)
    gone = asyncio.ensure_future(proto.client_disconnect())
    try:
        done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not gone.done():
            gone.cancel()
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
        if isinstance(exc, (aiohttp.ClientError, TimeoutError, UpstreamError)):
            log.warning("upstream_stream_interrupted", request_id=ctx.request_id,
                        provider=ctx.target.provider.name, error=type(exc).__name__)
        return
    ctx.usage = tap.usage or None
