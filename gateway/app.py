"""The RSGI application: per-worker lifecycle and routing by method and path.

Granian calls `__rsgi_init__(loop)` once per worker before serving, `__rsgi__(scope, proto)` per
request, and `__rsgi_del__(loop)` after the worker stopped serving.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Mapping
from typing import Any

import msgspec
import structlog

from gateway import __version__
from gateway.config import Config, config_source, load_config
from gateway.errors import GatewayError, NotFound, Protocol, render
from gateway.mock.app import MockApp
from gateway.observe import logging as gw_logging
from gateway.pipeline.context import EndpointSpec, RequestContext
from gateway.pipeline.stages import Pipeline
from gateway.protocol.views import decode_any, decode_view, framing_error, require_model
from gateway.providers.count_tokens import count_tokens as count_message_tokens
from gateway.providers.shedding import client_host
from gateway.providers.upstream import Transport
from gateway.worker.lifecycle import ParentWatch
from gateway.worker.memtrim import Trimmer, fix_thresholds
from gateway.worker.routes import Routes
from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.app")
_enc = msgspec.json.Encoder()
JSON = [("content-type", "application/json")]

_CHAT = EndpointSpec("chat", "openai")
_COMPLETIONS = EndpointSpec("completions", "openai")
_EMBEDDINGS = EndpointSpec("embeddings", "openai", streamable=False)
_RESPONSES = EndpointSpec("responses", "openai")
_MESSAGES = EndpointSpec("messages", "anthropic")

PROXY_ROUTES: dict[str, EndpointSpec] = {
    "/v1/chat/completions": _CHAT,
    "/chat/completions": _CHAT,
    "/v1/completions": _COMPLETIONS,
    "/completions": _COMPLETIONS,
    "/v1/embeddings": _EMBEDDINGS,
    "/embeddings": _EMBEDDINGS,
    "/v1/responses": _RESPONSES,
    "/responses": _RESPONSES,
    "/v1/messages": _MESSAGES,
    "/messages": _MESSAGES,
}

# The cyclic collector's thresholds. CPython's generation-0 default is 700 allocations: a request
# leaves a few dozen tracked objects alive until its after-work runs (audit entry, ledger rows,
# spans), so a collection ran every ~40 requests and the collector took ~20 us of every request in
# process (gc.callbacks over 50k requests); at 50,000 it runs every few thousand and costs ~2 us.
# Cycles wait longer to be freed: at most ~50k small objects, a few MB.
GC_THRESHOLD = (50_000, 50, 100)


def gc_threshold(environ: Mapping[str, str] = os.environ) -> tuple[int, ...]:
    """GC_THRESHOLD, or GATEWAY_GC_THRESHOLD ("700,10,10" is CPython's own); a bad value is logged."""
    raw = environ.get("GATEWAY_GC_THRESHOLD")
    if not raw:
        return GC_THRESHOLD
    try:
        values = tuple(int(x) for x in raw.split(","))
        if 1 <= len(values) <= 3 and all(v >= 0 for v in values):
            return values
    except ValueError:
        pass
    log.warning("GATEWAY_GC_THRESHOLD ignored: expected up to three non-negative integers", value=raw[:40])
    return GC_THRESHOLD


class GatewayApp:
    def __init__(self, config: Config | None = None, transports: Mapping[str, Transport] | None = None) -> None:
        self._config = config
        self._transports = transports  # in-memory providers, in tests
        self.rt: Runtime | None = None
        self.pipeline: Pipeline | None = None
        self.mock: MockApp | None = None
        self.trimmer = Trimmer()
        self.parent_watch: ParentWatch | None = None
        # Our own routes, then those the parts serve (admin, metrics, dashboards): path -> handler.
        self.routes: Routes = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/v1/models"): self.models,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("POST", "/messages/count_tokens"): self.count_tokens,
            ("GET", "/models"): self.models,
        }

    # ------------------------------------------------------------------ lifecycle

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self._config
        if cfg is None:
            path, upstream = config_source()
            cfg = load_config(path, upstream=upstream)
        gw_logging.configure(cfg.log.format, cfg.log.level)
        fix_thresholds()
        self.trimmer.start(loop)
        self.parent_watch = ParentWatch(grace_s=cfg.server.drain_timeout_s + 5.0)
        self.parent_watch.start(loop)
        loop.run_until_complete(self.startup(cfg))
        # Everything built at start-up lives as long as the worker: out of the collector's reach, a
        # full (generation 2) collection no longer walks it. Measured: 15 ms -> under 1 ms, a pause
        # that otherwise lands on whichever requests are in flight.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*gc_threshold())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.trimmer.stop()
        if self.parent_watch is not None:
            self.parent_watch.stop()
        loop.run_until_complete(self.shutdown())
        gw_logging.flush()

    async def startup(self, cfg: Config) -> None:
        rt = Runtime(cfg, self._transports)
        if cfg.server.mount_mock:
            self.mock = MockApp(prefix="/_mock")
        self.pipeline = await rt.start()
        self.routes.update(rt.routes)
        self.rt = rt
        rt.start_warmup()

    async def shutdown(self) -> None:
        if self.rt is not None:
            self.pipeline = None
            await self.rt.close()
            self.rt = None

    # ------------------------------------------------------------------ requests

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        spec = PROXY_ROUTES.get(path)
        pipeline = self.pipeline
        if spec is not None and scope.method == "POST" and pipeline is not None:
            await self.proxy(scope, proto, spec, pipeline)
            return
        if self.mock is not None and path.startswith("/_mock/"):
            await self.mock.__rsgi__(scope, proto)
            return
        handler = self.routes.get((scope.method, path))
        protocol: Protocol = "anthropic" if path.endswith(("/messages", "/messages/count_tokens")) else "openai"
        if handler is None:
            err: GatewayError = NotFound(f"No route for {scope.method} {path}.")
            status, body = render(err, protocol)
            proto.response_bytes(status, JSON, body)
            return
        try:
            result = handler(scope, proto, dict(scope.headers.items()))
            if result is not None:
                await result
        except GatewayError as exc:
            status, body = render(exc, protocol)
            proto.response_bytes(status, JSON, body)

    async def proxy(self, scope: Any, proto: Any, spec: EndpointSpec, pipeline: Pipeline) -> None:
        """A proxied request: refused at once past the worker's admission (a 503 the client can retry,
        not a queue that outgrows its deadline) or when its framing is ambiguous. Past the concurrency
        limit it waits for a slot (in arrival order, at most `max_queue_ms`) before its body is read."""
        assert self.rt is not None
        admission = self.rt.admission
        host = client_host(scope.client) if self.rt.per_client else None
        headers = dict(scope.headers.items())
        # The framing check only matters when a body length was declared oddly: a plain, single
        # Content-Length (what clients send) is checked in C by `isdigit`.
        declared = headers.get("content-length")
        plain = declared is not None and declared.isdigit() and "transfer-encoding" not in headers
        refusal: GatewayError | None = None if plain else framing_error(headers)
        if refusal is None:
            verdict = admission.enter(host)
            if verdict is not True and (verdict is False or not await admission.wait(verdict, host)):
                refusal = admission.refusal()
        if refusal is not None:
            status, body = render(refusal, spec.protocol)
            proto.response_bytes(status, [*JSON, *((k.lower(), v) for k, v in refusal.headers.items())], body)
            return
        ctx = RequestContext(spec, headers)
        try:
            await pipeline.handle(ctx, proto)
        finally:
            admission.leave(host)
            self.trimmer.after(len(ctx.body) or (int(declared) if plain and declared else 0))

    def healthz(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        proto.response_bytes(200, JSON, b'{"status":"alive"}')

    async def readyz(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        rt = self.rt
        ready = rt is not None and rt.ready
        degraded = rt.degraded_now() if rt else {}
        # Ask the store itself: this worker may not have touched it since it went away.
        if rt is not None and rt.store is not None and (rt.store.degraded or not await rt.store.ping()):
            degraded["store"] = "unreachable: cache, limits and shared counters degraded"
        body = {
            "status": "ready" if ready else "starting",
            "version": __version__,
            "providers": sorted(rt.providers) if rt else [],
            "degraded": degraded,
        }
        proto.response_bytes(200 if ready else 503, JSON, _enc.encode(body))

    async def count_tokens(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        """Anthropic's /v1/messages/count_tokens (Claude Code calls it), counted locally with the
        tokenizer of the model's first deployment, whichever provider serves it."""
        pipeline = self.pipeline
        if pipeline is None:
            raise GatewayError("The gateway is not ready.")
        body = await proto()
        view = decode_view(body)
        model = require_model(view)
        await pipeline.auth.resolve(headers, model)
        plan = pipeline.router.plan(model, "anthropic", "messages")
        data = decode_any(body)
        tokens = await asyncio.to_thread(count_message_tokens, data, plan.targets[0].model)
        proto.response_bytes(200, JSON, _enc.encode({"input_tokens": tokens}))

    async def models(self, scope: Any, proto: Any, headers: dict[str, str]) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            raise GatewayError("The gateway is not ready.")
        await pipeline.auth.resolve(headers)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gateway"}
                for name in pipeline.router.model_names()]
        proto.response_bytes(200, JSON, _enc.encode({"object": "list", "data": data}))


app = GatewayApp()
