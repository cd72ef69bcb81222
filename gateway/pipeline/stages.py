"""The request pipeline: every stage of a request, in order, in `Pipeline.handle` (see shared/DESIGN.md).

Each stage is a call on a named part the worker built once (gateway.worker.runtime); a capability
that is off is a null part with the same interface. Stages hand results on through the context's
typed slots (gateway.pipeline.context).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import structlog

from gateway.config import ResilienceConfig, RetryConfig
from gateway.errors import (
    DeploymentsEjected,
    GatewayError,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamError,
    UpstreamStatus,
)
from gateway.observe.tracing import CACHE_LOOKUP, LIMITS, POLICIES, NullTracer, TracerPart, provider_name
from gateway.pipeline.after import AfterWork
from gateway.pipeline.context import RequestContext
from gateway.pipeline.parts import Auth, Cache, Limits, Policies, Transform
from gateway.pipeline.respond import Responder
from gateway.protocol.views import decode_view, require_model
from gateway.providers.resilience import Breaker, Resilience, backoff, counts_as_failure
from gateway.providers.retry_after import retry_after_s
from gateway.providers.routing import Router, Target
from gateway.providers.upstream import Endpoint, UpstreamResponse

log = structlog.get_logger("gateway.pipeline")


class Pipeline:
    def __init__(self, *, max_body: int, retries: RetryConfig, auth: Auth, router: Router, limits: Limits,
                 policies: Policies, cache: Cache, transform: Transform, respond: Responder, after: AfterWork,
                 tracer: TracerPart | None = None, resilience: Resilience | None = None,
                 collect_streams: bool = False, body_timeout_s: float = 30.0) -> None:
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s
        self.retries = retries
        self.auth = auth
        self.router = router
        self.limits = limits
        self.policies = policies
        self.cache = cache
        self.transform = transform
        self.respond = respond
        self.after = after
        self.tracer: TracerPart = tracer or NullTracer()
        self.resilience = resilience or Resilience(ResilienceConfig(), ())
        self.collect_streams = collect_streams  # the archive keeps every streamed answer

    async def handle(self, ctx: RequestContext, proto: Any) -> None:
        span = ctx.span = self.tracer.start_request(ctx.headers, ctx.endpoint.name, "")  # a null span when off
        try:
            await receive(ctx, proto, self.max_body, self.body_timeout_s)    # 1 body, size and time limits
            parse(ctx, self.collect_streams)                                 # 2 msgspec view, raw bytes kept
            span.set_model(ctx.model)
            ctx.key = await self.auth.resolve(ctx.headers, ctx.model)        # 3 configured + virtual keys
            ctx.plan = self.router.plan(ctx.model, ctx.endpoint.protocol,    # 4 route once: targets, translators
                                        ctx.endpoint.name)
            with span.child(LIMITS):
                await self.limits.admit(ctx)                                 # 5 rpm/tpm/budgets across replicas
            with span.child(POLICIES):
                await self.policies.start(ctx)                               #   input policies (remote: beside)
            lookup = span.child(CACHE_LOOKUP)
            async with self.cache.flight(ctx) as flight:                     # 6 MetaCache around the call
                lookup.set("gateway.cache.hit", flight.hit is not None)
                lookup.end()
                if flight.hit is not None:
                    await self.respond.replay(ctx, proto, flight.hit)        #   same checks and headers
                    return
                await self.transform.apply(ctx)                              # 7 compression, cache markers
                await self.forward(ctx, proto)                               # 8-9 transport, retries, respond
                flight.publish(ctx)                                          #   single-flight hand-over
        except GatewayError as err:
            self.respond.error(ctx, proto, err)
        except Exception as exc:  # a bug must still answer in the caller's shape, never drop the connection
            log.exception("request_failed", request_id=ctx.request_id, error=type(exc).__name__)
            self.respond.error(ctx, proto, GatewayError("The gateway failed to handle the request."))
        finally:
            self.after.submit(ctx)                                           # 10 settle, write-back, ledger, audit

    async def forward(self, ctx: RequestContext, proto: Any) -> None:
        """Try the plan's targets in order, then again (up to `retries.attempts` more rounds) after a
        jittered back-off: a failed deployment hands over to the next one at once (the first round
        is bounded by the plan's length, and breakers take failing deployments out of it), and a
        repeat is only sent while the provider's retry budget allows it. Ejected deployments (their
        breaker is open) are skipped. Everything happens before the first byte reached the client."""
        plan = ctx.plan
        assert plan is not None
        res = self.resilience
        budget = res.budget(plan.targets[0].provider.name)
        budget.request()
        last: GatewayError | None = None
        ejected: list[Breaker] = []
        ctx.t_upstream = time.perf_counter()
        mark = ctx.prompt_cache is not None and ctx.prompt_cache.mark_translated
        for round_ in range(1 + self.retries.attempts):
            if round_:
                if not res.worth_a_retry(budget, (t.deployment for t in plan.targets)):
                    raise self._exhausted(last, ejected)  # no budget, or every deployment out: answer now
                wait = self._wait(round_ - 1, last)
                if wait is None:
                    raise self._exhausted(last, ejected)  # the provider asks for longer: its answer stands
                await asyncio.sleep(wait)
            for i, target in enumerate(plan.targets):
                breaker = res.breakers.get(target.deployment)
                if not breaker.allow(last_resort=not round_ and len(ejected) == len(plan.targets) - 1):
                    ejected.append(breaker)
                    continue
                if round_ and not budget.try_retry():
                    raise self._exhausted(last, ejected)  # out of retry budget: the last attempt's answer
                ctx.target = target
                ctx.fallback = i > 0 and target.route is not plan.route
                translator = target.translator
                endpoint = translator.endpoint(ctx.endpoint.name, ctx.stream)
                payload = translator.request(ctx.body, ctx.data, target.model, ctx.model, changed=ctx.changed,
                                             mark_cache=mark)
                ctx.attempts += 1
                provider = target.provider
                up = ctx.span.upstream(provider_name(provider.kind), target.model, provider.host, provider.port)
                try:
                    resp = await (self._open_guarded(ctx, target, endpoint, payload) if ctx.guards
                                  else self._open(ctx, target, endpoint, payload))
                except UpstreamError as err:
                    status = getattr(err, "upstream_status", None)
                    (breaker.failure if counts_as_failure(status) else breaker.success)()
                    up.end(type(err).__name__, status)
                    if isinstance(err, UpstreamStatus) and not err.is_retryable:
                        raise  # a 4xx from the provider: its answer, passed through
                    last = err
                    continue
                except BaseException:
                    breaker.abandon()  # cancelled or blocked by a policy: no verdict on the deployment
                    up.end("cancelled")
                    raise
                breaker.success()
                try:
                    if ctx.stream:
                        await self.respond.stream(ctx, proto, resp, translator)
                    else:
                        await self.respond.plain(ctx, proto, resp, translator)
                finally:
                    resp.release()
                    up.end(ctx.error, resp.status)
                return
        raise self._exhausted(last, ejected)

    @staticmethod
    def _exhausted(last: GatewayError | None, ejected: list[Breaker]) -> GatewayError:
        """What the client gets when no attempt succeeded: the last failure, or a 503 when every
        deployment was skipped because its breaker is open."""
        if last is not None:
            return last
        wait = max(1, math.ceil(min((b.retry_in_s() for b in ejected), default=1.0)))
        return DeploymentsEjected("Every deployment of this model is failing and was taken out of rotation; "
                                  "try again shortly.", headers={"retry-after": str(wait)})

    def _wait(self, retry: int, last: GatewayError | None) -> float | None:
        """How long before the next round: jittered exponential back-off, or what the provider asked
        for (retry-after, x-ratelimit-reset-*); None when that is longer than the back-off cap."""
        wait = backoff(retry, self.retries.backoff_ms, self.retries.max_backoff_ms, self.resilience.rng)
        if isinstance(last, UpstreamStatus):
            asked = retry_after_s(last.upstream_status, last.headers)
            if asked is not None:
                if asked > self.retries.max_backoff_ms / 1000.0:
                    return None
                wait = max(wait, asked)
        return wait

    async def _open(self, ctx: RequestContext, target: Target, endpoint: Endpoint, payload: bytes) -> UpstreamResponse:
        t = time.perf_counter()
        try:
            return await target.provider.send(endpoint, target.model, payload, ctx.headers,
                                              ctx.span.outgoing_headers())
        finally:
            ctx.upstream_ms = (time.perf_counter() - t) * 1000.0

    async def _open_guarded(self, ctx: RequestContext, target: Target, endpoint: Endpoint,
                            payload: bytes) -> UpstreamResponse:
        """Remote input policies run beside the upstream call: the answer is held until they pass, and
        a policy that blocks cancels the call."""
        opener = asyncio.ensure_future(self._open(ctx, target, endpoint, payload))
        pending: set[asyncio.Future[Any]] = {opener, *ctx.guards}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    if fut is not opener and exc is not None:
                        raise exc
                opened_exc = opener.exception() if opener.done() else None
                if opened_exc is not None and not any(g in pending for g in ctx.guards):
                    raise opened_exc
        except BaseException:
            if not opener.done():
                opener.cancel()
            elif opener.exception() is None:
                opener.result().close()
            raise
        ctx.guards = []  # passed: retries and fallbacks don't wait again
        return opener.result()


async def receive(ctx: RequestContext, proto: Any, limit: int, timeout_s: float = 30.0) -> None:
    """The request body, within `limit` bytes and `timeout_s` (a trickled body is a 408). A body over
    the limit is read anyway, up to a bound, before the 413: a client still sending never reads an
    answer to a request it has not finished."""
    declared = ctx.headers.get("content-length")
    # One timer that cancels this task (cheaper than an asyncio.timeout context per request).
    task = asyncio.current_task()
    assert task is not None
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        body = await proto()
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None
    finally:
        timer.cancel()
    if len(body) > limit or (declared is not None and declared.isdigit() and int(declared) > limit):
        raise PayloadTooLarge(f"The request body is {declared or len(body)} bytes; the limit is {limit}.")
    ctx.body = body


def parse(ctx: RequestContext, collect_streams: bool) -> None:
    view = decode_view(ctx.body, ctx.endpoint.name)
    ctx.view = view
    ctx.model = require_model(view)
    ctx.stream = bool(view.stream) and ctx.endpoint.streamable
    ctx.include_usage = bool(view.stream_options and view.stream_options.include_usage)
    ctx.collect_stream = collect_streams and ctx.stream
