"""After-work: what happens once the answer went out, in a fixed order, off the latency path.

    settle limits -> cancel moot policy checks -> cache write-back -> compression token counts
    -> cost and savings (ledger) -> audit entry, metrics, archive

Most requests need no awaiting at all: their after-work runs in one batched callback per loop
iteration (no task per request). A request with asynchronous work (a cache write-back, compressed
texts to count) gets a task. `idle()` is the completion signal: it returns once every submitted
request's after-work is done, so tests and shutdown wait on it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from gateway.observe.tracing import NULL_SPAN, GenAIResult, provider_name
from gateway.pipeline.context import RequestContext
from gateway.pipeline.parts import Costs, Limits, Observe, Policies, Transform

log = structlog.get_logger("gateway.after")


class AfterWork:
    def __init__(self, limits: Limits, policies: Policies, transform: Transform, costs: Costs,
                 observe: Observe) -> None:
        self.limits = limits
        self.policies = policies
        self.transform = transform
        self.costs = costs
        self.observe = observe
        self._batch: list[RequestContext] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: list[asyncio.Future[None]] = []

    def submit(self, ctx: RequestContext) -> None:
        if not ctx.t_end:
            ctx.t_end = time.perf_counter()
        if ctx.write_back is not None or (ctx.compression is not None and (ctx.compression.changed_texts
                                                                          or ctx.compression.compaction_texts)):
            task = asyncio.ensure_future(self._run_async(ctx))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            return
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(ctx)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        for ctx in batch:
            self._settle(ctx)
            self._account(ctx)
        self._wake()

    async def _run_async(self, ctx: RequestContext) -> None:
        self._settle(ctx)
        if ctx.write_back is not None:
            try:
                await ctx.write_back.run()
            except Exception:
                log.exception("cache_write_back_failed", request_id=ctx.request_id)
        try:
            await self.transform.count_tokens_saved(ctx)
        except Exception:
            log.exception("compression_count_failed", request_id=ctx.request_id)
        self._account(ctx)

    def _settle(self, ctx: RequestContext) -> None:
        try:
            self.limits.settle(ctx)
            self.policies.finish(ctx)
        except Exception:
            log.exception("settle_failed", request_id=ctx.request_id)

    def _account(self, ctx: RequestContext) -> None:
        try:
            self.costs.account(ctx)
        except Exception:
            log.exception("ledger_failed", request_id=ctx.request_id)
        try:
            self.observe.record(ctx)
            if ctx.span is not NULL_SPAN:
                ctx.span.finish(genai_result(ctx))
        except Exception:
            log.exception("observe_failed", request_id=ctx.request_id)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._wake()

    def _wake(self) -> None:
        if self._waiters and not self._batch and not self._tasks:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._batch) + len(self._tasks)

    async def idle(self) -> None:
        """Return once all after-work submitted so far (and any submitted meanwhile) is done."""
        while self._batch or self._tasks:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def drain(self, within_s: float) -> None:
        try:
            await asyncio.wait_for(self.idle(), within_s)
        except TimeoutError:
            log.warning("after_work_not_drained", pending=self.pending)


def genai_result(ctx: RequestContext) -> GenAIResult:
    """The request's GenAI semantic-convention attributes, for its trace's server span."""
    target = ctx.target
    view = ctx.view
    usage = ctx.usage
    hit = ctx.cache
    provider = target.provider if target is not None and hit is None else None
    return GenAIResult(
        status=ctx.status, provider=provider_name(provider.kind) if provider is not None else None,
        response_model=target.model if target is not None and hit is None else ctx.model,
        input_tokens=usage.prompt if usage is not None else None,
        output_tokens=usage.output if usage is not None else None,
        max_tokens=(view.max_completion_tokens or view.max_tokens) if view is not None else None,
        temperature=view.temperature if view is not None else None,
        server_address=provider.host if provider is not None else None,
        server_port=provider.port if provider is not None else None,
        error_type=ctx.error, cache_hit=hit is not None, cache_phase=hit.tier if hit is not None else None,
        stream=ctx.stream, request_id=ctx.request_id,
    )
