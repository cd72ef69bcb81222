"""The request pipeline: one straight line of stages over a RequestContext (see shared/DESIGN.md).

receive -> parse -> auth -> limit -> route -> cache lookup -> transform -> forward -> respond -> after.
Optional stages (limits, cache, transforms, audit) are plug-ins held by the Runtime; a stage that
is off costs one attribute check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp
import structlog

from gateway.errors import GatewayError, PayloadTooLarge, UpstreamError, UpstreamStatus, render
from gateway.pipeline.context import RequestContext
from gateway.pipeline.respond import StreamTap, send_plain, send_stream
from gateway.protocol.views import decode_view, encode, require_model
from gateway.providers.routing import Target
from gateway.providers.translate import chat_to_anthropic
from gateway.providers.upstream import map_client_errors, passback_headers
from gateway.transform.promptcache import mark_system

if TYPE_CHECKING:
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.pipeline.stages")


class Stage(Protocol):
    """An optional stage: may answer the request itself (return True) or change ctx."""

    async def __call__(self, ctx: RequestContext, proto: Any) -> bool: ...


AfterHook = Callable[[RequestContext, bytes | None, StreamTap | None], Awaitable[None] | None]


async def receive(ctx: RequestContext, proto: Any, limit: int) -> None:
    declared = ctx.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
    body = await proto()
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body is {len(body)} bytes; the limit is {limit}.")
    ctx.body = body


def parse(ctx: RequestContext) -> None:
    view = decode_view(ctx.body)
    ctx.view = view
    ctx.model = require_model(view)
    ctx.stream = bool(view.stream) and ctx.endpoint.streamable
    ctx.include_usage = bool(view.stream_options and view.stream_options.include_usage)


def payload_for(ctx: RequestContext, target: Target) -> bytes:
    """The bytes to send to `target`: the client's own bytes whenever nothing had to change."""
    if target.translate:
        body = chat_to_anthropic(ctx.json(), target.model)
        if ctx.extra.get("inject_cache_control"):  # set by the transform stage (promptcache rules)
            body = mark_system(body) or body
        return encode(body)
    if target.model != ctx.model:
        data = dict(ctx.json())
        data["model"] = target.model
        return encode(data)
    if ctx.changed and ctx.data is not None:
        return encode(ctx.data)
    return ctx.body


class Pipeline:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.max_body = rt.cfg.server.max_body_bytes
        self.retries = rt.cfg.retries
        self._background: set[asyncio.Task[Any]] = set()

    async def handle(self, ctx: RequestContext, proto: Any) -> None:
        rt = self.rt
        try:
            await receive(ctx, proto, self.max_body)
            parse(ctx)
            ctx.key = await rt.auth.resolve(ctx.headers)
            rt.auth.check_model(ctx.key, ctx.model)
            for stage in rt.before_stages:  # limits, cache lookup, transforms (in that order)
                if await stage(ctx, proto):
                    return
            plan = rt.router.plan(ctx.model, ctx.endpoint.protocol, ctx.endpoint.name)
            await self.forward(ctx, plan, proto)
        except GatewayError as err:
            self.fail(ctx, proto, err)
        finally:
            self.after(ctx)

    def fail(self, ctx: RequestContext, proto: Any, err: GatewayError) -> None:
        if ctx.t_first_byte:
            return  # the answer already started: nothing else can be sent
        status, body = render(err, ctx.endpoint.protocol)
        ctx.status = status
        ctx.error = err.code or err.type
        headers = [("content-type", "application/json"), ("x-gateway-request-id", ctx.request_id)]
        headers.extend((k.lower(), v) for k, v in err.headers.items())
        proto.response_bytes(status, headers, body)

    async def forward(self, ctx: RequestContext, plan: list[Target], proto: Any) -> None:
        """Try each target in order; retry each on retryable failures, only before the first byte."""
        last: GatewayError | None = None
        ctx.t_upstream = time.perf_counter()
        for i, target in enumerate(plan):
            ctx.target = target
            ctx.fallback = i > 0 and target.route is not plan[0].route
            payload = payload_for(ctx, target)
            for attempt in range(1 + self.retries.attempts):
                ctx.attempts += 1
                try:
                    if ctx.guards:
                        resp = await self._open_guarded(ctx, target, payload)
                    else:
                        resp = await self._open(ctx, target, payload)
                except UpstreamError as err:
                    last = err
                    if isinstance(err, UpstreamStatus) and not err.is_retryable:
                        raise  # a 4xx from the provider: its answer, passed through
                    if attempt < self.retries.attempts:
                        await asyncio.sleep(self._backoff(attempt))
                    continue
                try:
                    await self._respond(ctx, proto, resp)
                finally:
                    resp.release()
                return
        assert last is not None
        raise last

    async def _open_guarded(self, ctx: RequestContext, target: Target, payload: bytes) -> aiohttp.ClientResponse:
        """Run input policies beside the upstream call: the answer is held until they pass, and a
        policy that blocks cancels the call (see DESIGN: compliance runs beside the provider call)."""
        opener = asyncio.ensure_future(self._open(ctx, target, payload))
        pending: set[asyncio.Future[Any]] = {opener, *ctx.guards}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    if fut is not opener and fut.exception() is not None:
                        raise fut.exception()  # type: ignore[misc]
                if opener in done and opener.exception() is not None:
                    if not any(g in pending for g in ctx.guards):
                        raise opener.exception()  # type: ignore[misc]
        except BaseException:
            if not opener.done():
                opener.cancel()
            elif opener.exception() is None:
                opener.result().close()
            raise
        ctx.guards = []  # passed: retries and fallbacks don't wait again
        return opener.result()

    def _backoff(self, attempt: int) -> float:
        return min(self.retries.backoff_ms * (2**attempt), self.retries.max_backoff_ms) / 1000.0

    async def _open(self, ctx: RequestContext, target: Target, payload: bytes) -> aiohttp.ClientResponse:
        provider = target.provider
        endpoint = "messages" if target.translate else ctx.endpoint.name
        t = time.perf_counter()
        resp = await provider.post(endpoint, target.model, payload, ctx.headers)
        ctx.upstream_ms = (time.perf_counter() - t) * 1000.0
        if resp.status >= 400:
            with map_client_errors(provider.name):
                body = await resp.read()
            resp.release()
            protocol: Literal["openai", "anthropic"] = (
                "anthropic" if (target.translate or endpoint == "messages") else "openai")
            raise UpstreamStatus(resp.status, body, protocol=protocol, provider=provider.name,
                                 headers=dict(passback_headers(resp.headers)))
        return resp

    async def _respond(self, ctx: RequestContext, proto: Any, resp: aiohttp.ClientResponse) -> None:
        if ctx.stream:
            tap = StreamTap(collect=bool(ctx.extra.get("collect_stream")))
            await send_stream(ctx, proto, resp, tap)
            ctx.extra["tap"] = tap
        else:
            ctx.extra["response"] = await send_plain(ctx, proto, resp)

    def after(self, ctx: RequestContext) -> None:
        """Fire-and-forget work after the answer went out: never on the latency path."""
        hooks = self.rt.after_hooks
        if not hooks:
            return
        ctx.extra["t_end"] = time.perf_counter()
        task = asyncio.ensure_future(self._run_after(ctx, hooks))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_after(self, ctx: RequestContext, hooks: list[AfterHook]) -> None:
        for hook in hooks:
            try:
                result = hook(ctx, ctx.extra.get("response"), ctx.extra.get("tap"))
                if result is not None:
                    await result
            except Exception:
                log.exception("after_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)),
                              request_id=ctx.request_id)

    async def drain(self, within_s: float) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=within_s)

