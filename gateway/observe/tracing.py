"""Request tracing: one span tree per request, W3C trace context in and out, GenAI semconv 1.37.

The pipeline holds one tracer per worker, built by `build_tracer(os.environ)`:

    span = tracer.start_request(ctx.headers, "chat", ctx.model)   # SERVER span, parent from traceparent
    with span.child(CACHE_LOOKUP):                                # INTERNAL stage spans
        ...
    up = span.upstream(provider_name("openai"), target_model, "api.openai.com", 443)  # CLIENT, one attempt
    send({**headers, **span.outgoing_headers()})                  # traceparent names `up` as the parent
    up.end(status=200)
    span.finish(GenAIResult(...))                                 # after the stream ended; queued for export

Tracing off is a `NullTracer`: its spans are shared singletons whose methods return at once (it only
forwards a valid client `traceparent`/`tracestate` unchanged, as a non-participating hop must). An
unsampled request gets a forwarding span too, naming a fresh span id with the sampled flag clear.
Nothing here does I/O: finished requests go to the exporter's bounded queue (gateway.observe.otlp),
and their attributes are written as protobuf by its flusher (gateway.observe.otlp_wire), off the
request path.

Attribute names follow the OpenTelemetry GenAI semantic conventions v1.37.0 (still "development"):
the SERVER span carries the whole request (usage, finish reasons, response model); the CLIENT span of
the upstream call carries the provider, target model and server address but not the usage, so a
backend summing tokens over spans counts each request once. `gen_ai.system` (the pre-1.37 name) is
sent beside `gen_ai.provider.name` for backends that still read it.
"""

from __future__ import annotations

import os
import random
import time
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from gateway.observe.traceconf import TraceSettings, from_env
from gateway.observe.tracecontext import clean_tracestate, format_traceparent, parse_traceparent, valid_traceparent

if TYPE_CHECKING:
    from gateway.observe.otlp import OtlpExporter

SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# OTLP Span.SpanKind values.
INTERNAL, SERVER, CLIENT = 1, 2, 3

_MASK64 = (1 << 64) - 1

# Stage span names the pipeline uses.
CACHE_LOOKUP = "gateway.cache.lookup"
LIMITS = "gateway.limits"
POLICIES = "gateway.policies"
TRANSFORM = "gateway.transform"

OPERATIONS = {"chat": "chat", "messages": "chat", "responses": "chat", "completions": "text_completion",
              "embeddings": "embeddings"}

# gen_ai.provider.name well-known values (semconv 1.37) for the gateway's provider kinds.
PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
                  "vertex": "gcp.vertex_ai", "bedrock": "aws.bedrock", "mistral": "mistral_ai", "groq": "groq",
                  "deepseek": "deepseek", "cohere": "cohere", "xai": "x_ai", "perplexity": "perplexity"}


class GenAIResult(msgspec.Struct, kw_only=True):
    """What the pipeline knows once a request is over; becomes the SERVER span's attributes."""

    status: int = 200  # http.response.status_code sent to the client
    provider: str | None = None  # gen_ai.provider.name: openai, anthropic, azure.ai.openai, ...
    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    finish_reasons: tuple[str, ...] = ()
    server_address: str | None = None
    server_port: int | None = None
    error_type: str | None = None  # error.type; also makes the span status ERROR
    cache_hit: bool = False
    cache_phase: str | None = None  # intent, near_miss, exact, semantic
    stream: bool = False
    request_id: str | None = None


def provider_name(kind: str) -> str:
    """The semconv name of a provider kind (others, e.g. a self-hosted vLLM, keep their own)."""
    return PROVIDER_NAMES.get(kind, kind)


# --------------------------------------------------------------------------- the interface


class StageSpan(Protocol):
    def __enter__(self) -> StageSpan: ...
    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> None: ...
    def set(self, key: str, value: Any) -> None: ...
    def end(self, error_type: str | None = None, status: int | None = None) -> None: ...


class RequestSpan(Protocol):
    def child(self, name: str) -> StageSpan: ...
    def upstream(self, provider: str, model: str, address: str | None = None,
                 port: int | None = None) -> StageSpan: ...
    def outgoing_headers(self) -> Mapping[str, str]: ...
    def set(self, key: str, value: Any) -> None: ...
    def set_model(self, model: str) -> None: ...
    def finish(self, result: GenAIResult) -> None: ...


class TracerPart(Protocol):
    enabled: bool

    def start_request(self, headers: Mapping[str, str], endpoint: str, model: str) -> RequestSpan: ...
    def start(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- off: null and forwarding


class _NullStage:
    __slots__ = ()

    def __enter__(self) -> _NullStage:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        return None

    def end(self, error_type: str | None = None, status: int | None = None) -> None:
        return None


NULL_STAGE = _NullStage()


class ForwardSpan:
    """A request that is not recorded: stages cost nothing, trace context passes through."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers

    def child(self, name: str) -> _NullStage:
        return NULL_STAGE

    def upstream(self, provider: str, model: str, address: str | None = None, port: int | None = None) -> _NullStage:
        return NULL_STAGE

    def outgoing_headers(self) -> Mapping[str, str]:
        return self.headers  # read-only: merge it into the upstream request's own headers

    def set(self, key: str, value: Any) -> None:
        return None

    def set_model(self, model: str) -> None:
        return None

    def finish(self, result: GenAIResult) -> None:
        return None


NULL_SPAN = ForwardSpan(MappingProxyType({}))  # shared: nobody may add to it


class NullTracer:
    """Tracing off: no ids, no clock reads, no queue. A valid client trace context is forwarded as is."""

    enabled = False

    def start_request(self, headers: Mapping[str, str], endpoint: str, model: str) -> ForwardSpan:
        tp = headers.get("traceparent")
        if tp is None or not valid_traceparent(tp):
            return NULL_SPAN  # the server has already trimmed header whitespace
        out = {"traceparent": tp}
        ts = clean_tracestate(headers.get("tracestate"))
        if ts:
            out["tracestate"] = ts
        return ForwardSpan(out)

    def start(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- on: recorded spans


class Stage:
    """One child span (a pipeline stage or an upstream attempt); a context manager or start/end pair."""

    __slots__ = ("attrs", "end_ns", "error", "kind", "name", "parent_id", "span_id", "start_ns", "status")

    def __init__(self, name: str, kind: int, span_id: int, parent_id: int) -> None:
        self.name, self.kind, self.span_id, self.parent_id = name, kind, span_id, parent_id
        self.attrs: dict[str, Any] | None = None
        self.error: str | None = None
        self.status: int | None = None
        self.end_ns = 0
        self.start_ns = time.time_ns()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> None:
        self.end(et.__name__ if et is not None else None)

    def set(self, key: str, value: Any) -> None:
        if self.attrs is None:
            self.attrs = {}
        self.attrs[key] = value

    def end(self, error_type: str | None = None, status: int | None = None) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()
        if error_type is not None:
            self.error = error_type
        if status is not None:
            self.status = status


class Trace:
    """The SERVER span of one sampled request and its children, queued for export when finished."""

    __slots__ = ("_exporter", "_ids", "_upstream", "attrs", "children", "end_ns", "model", "operation",
                 "parent_id", "result", "span_id", "start_ns", "trace_id", "tracestate")

    def __init__(self, exporter: OtlpExporter, ids: random.Random, trace_id: int, parent_id: int,
                 tracestate: str | None, operation: str, model: str) -> None:
        self._exporter, self._ids = exporter, ids
        self.trace_id, self.parent_id, self.tracestate = trace_id, parent_id, tracestate
        self.span_id = ids.getrandbits(64) or 1
        self.operation, self.model = operation, model
        self.children: list[Stage] = []
        self._upstream: Stage | None = None
        self.attrs: dict[str, Any] | None = None
        self.result: GenAIResult | None = None
        self.end_ns = 0
        self.start_ns = time.time_ns()

    def child(self, name: str) -> Stage:
        stage = Stage(name, INTERNAL, self._ids.getrandbits(64) or 1, self.span_id)
        self.children.append(stage)
        return stage

    def upstream(self, provider: str, model: str, address: str | None = None, port: int | None = None) -> Stage:
        # Named "{operation} {model}" and of kind CLIENT, as the GenAI conventions ask of an inference call.
        stage = Stage(f"{self.operation} {model}", CLIENT, self._ids.getrandbits(64) or 1, self.span_id)
        stage.attrs = {"gen_ai.operation.name": self.operation, "gen_ai.provider.name": provider,
                       "gen_ai.system": provider, "gen_ai.request.model": model}
        if address:
            stage.attrs["server.address"] = address
        if port:
            stage.attrs["server.port"] = port
        self.children.append(stage)
        self._upstream = stage
        return stage

    def outgoing_headers(self) -> dict[str, str]:
        """For the upstream request: the latest upstream attempt is the parent (else this span)."""
        up = self._upstream
        out = {"traceparent": format_traceparent(self.trace_id, up.span_id if up else self.span_id, True)}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out

    def set(self, key: str, value: Any) -> None:
        if self.attrs is None:
            self.attrs = {}
        self.attrs[key] = value

    def set_model(self, model: str) -> None:
        """For a span started before the body was parsed: the requested model names it."""
        self.model = model

    def finish(self, result: GenAIResult) -> None:
        if self.end_ns:
            return  # finished once: a second call (error path after a stream) changes nothing
        end = self.end_ns = time.time_ns()
        self.result = result
        for stage in self.children:
            if not stage.end_ns:
                stage.end_ns = end  # a stage left open by an early exit ends with the request
        self._exporter.put(self)


class Tracer:
    """Tracing on: samples, records span trees and hands finished ones to the OTLP exporter."""

    enabled = True

    def __init__(self, settings: TraceSettings, exporter: OtlpExporter | None = None) -> None:
        if exporter is None:
            from gateway.observe.otlp import OtlpExporter  # the exporter is loaded only when tracing is on

            exporter = OtlpExporter(settings)
        self.settings = settings
        self.exporter = exporter
        self.parent_based = settings.sampler.startswith("parentbased_")
        root = settings.sampler.removeprefix("parentbased_")
        # Sampled when the trace id's low 64 bits fall under the bound (the OpenTelemetry SDKs' rule).
        ratio = {"always_on": 1.0, "always_off": 0.0}.get(root, settings.ratio)
        self.bound = round(ratio * (1 << 64))
        self.ids = random.Random(os.urandom(16))
        _TRACERS.add(self)

    def sampled(self, trace_id: int, parent_flags: int | None) -> bool:
        if parent_flags is not None and self.parent_based:
            return bool(parent_flags & 1)
        return (trace_id & _MASK64) < self.bound

    def start_request(self, headers: Mapping[str, str], endpoint: str, model: str) -> Trace | ForwardSpan:
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is None:
            trace_id, parent_id, flags, state = self.ids.getrandbits(128) or 1, 0, None, None
        else:
            trace_id, parent_id, flags = parent
            state = clean_tracestate(headers.get("tracestate"))
        if not self.sampled(trace_id, flags):
            out = {"traceparent": format_traceparent(trace_id, self.ids.getrandbits(64) or 1, False)}
            if state:
                out["tracestate"] = state
            return ForwardSpan(out)
        return Trace(self.exporter, self.ids, trace_id, parent_id, state, OPERATIONS.get(endpoint, endpoint),
                     model)

    @property
    def dropped(self) -> int:
        return self.exporter.batcher.dropped

    def start(self) -> None:
        self.exporter.start()

    async def flush(self) -> None:
        await self.exporter.batcher.flush()

    async def close(self) -> None:
        await self.exporter.close()


_TRACERS: weakref.WeakSet[Tracer] = weakref.WeakSet()


def _reseed_after_fork() -> None:
    # A tracer built before a fork would otherwise hand every worker the same span ids.
    for tracer in _TRACERS:
        tracer.ids.seed(os.urandom(16))


os.register_at_fork(after_in_child=_reseed_after_fork)


def build_tracer(env: Mapping[str, str] | None = None) -> Tracer | NullTracer:
    """The worker's tracer from `OTEL_*` variables: a NullTracer unless OTLP export is configured."""
    settings = from_env(os.environ if env is None else env)
    return Tracer(settings) if settings.enabled else NullTracer()


if TYPE_CHECKING:  # mypy checks that both parts and their spans keep the one interface
    def _conforms(t: Tracer, n: NullTracer, tr: Trace, f: ForwardSpan, s: Stage, ns: _NullStage
                  ) -> tuple[TracerPart, TracerPart, RequestSpan, RequestSpan, StageSpan, StageSpan]:
        return t, n, tr, f, s, ns
