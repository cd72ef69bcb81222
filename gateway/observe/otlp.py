"""OTLP/HTTP export of finished span trees: protobuf `ExportTraceServiceRequest` to `/v1/traces`.

Requests only append to a bounded queue (gateway.observe.batcher); a background task encodes and
posts a batch every `OTEL_BSP_SCHEDULE_DELAY` or as soon as `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` wait.
A full queue drops and counts; a collector that is down or refuses costs one warning
(`observe_sink_failed`, sink=otlp) until it answers again; no request ever waits for it. The
protobuf classes come from `opentelemetry-proto` and are imported here, so only when tracing is on.
"""

from __future__ import annotations

import gzip
import ssl
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from gateway import __version__
from gateway.observe.batcher import Batcher
from gateway.observe.traceconf import TraceSettings
from gateway.observe.tracing import SCHEMA_URL, SERVER, Stage

if TYPE_CHECKING:
    from gateway.observe.tracing import Trace

_SAMPLED = 0x01
_HAS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_ERROR = Status(code=Status.STATUS_CODE_ERROR)


class ExportRefused(Exception):
    """The collector answered with a status other than 2xx."""


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):  # before int: bool is an int
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (tuple, list)):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=str(value))


def _kvs(attrs: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs if v is not None]


def server_attributes(trace: Trace) -> dict[str, Any]:
    """The SERVER span's attributes: GenAI semconv names from the request and its result."""
    r = trace.result
    out: dict[str, Any] = {"gen_ai.operation.name": trace.operation, "gen_ai.request.model": trace.model}
    if r is not None:
        out.update({
            "gen_ai.provider.name": r.provider, "gen_ai.system": r.provider,
            "gen_ai.response.model": r.response_model, "gen_ai.response.id": r.response_id,
            "gen_ai.usage.input_tokens": r.input_tokens, "gen_ai.usage.output_tokens": r.output_tokens,
            "gen_ai.request.max_tokens": r.max_tokens, "gen_ai.request.temperature": r.temperature,
            "gen_ai.response.finish_reasons": r.finish_reasons or None,
            "server.address": r.server_address, "server.port": r.server_port,
            "error.type": r.error_type, "http.response.status_code": r.status,
            "gateway.cache.hit": r.cache_hit, "gateway.cache.phase": r.cache_phase,
            "gateway.stream": r.stream, "gateway.request.id": r.request_id,
        })
    if trace.attrs:
        out.update(trace.attrs)
    return out


def _stage(trace_id: bytes, stage: Stage) -> Span:
    attrs = dict(stage.attrs) if stage.attrs else {}
    if stage.status is not None:
        attrs["http.response.status_code"] = stage.status
    if stage.error is not None:
        attrs["error.type"] = stage.error
    return Span(trace_id=trace_id, span_id=stage.span_id.to_bytes(8, "big"),
                parent_span_id=stage.parent_id.to_bytes(8, "big"), flags=_SAMPLED | _HAS_REMOTE,
                name=stage.name, kind=stage.kind,  # type: ignore[arg-type]
                start_time_unix_nano=stage.start_ns, end_time_unix_nano=stage.end_ns,
                attributes=_kvs(attrs.items()), status=_ERROR if stage.error is not None else None)


def spans_of(trace: Trace) -> list[Span]:
    tid = trace.trace_id.to_bytes(16, "big")
    r = trace.result
    error = r.error_type if r is not None else None
    root = Span(
        trace_id=tid, span_id=trace.span_id.to_bytes(8, "big"),
        parent_span_id=trace.parent_id.to_bytes(8, "big") if trace.parent_id else b"",
        trace_state=trace.tracestate or "",
        flags=_SAMPLED | _HAS_REMOTE | (_IS_REMOTE if trace.parent_id else 0),
        name=f"{trace.operation} {trace.model}" if trace.model else trace.operation,
        kind=SERVER,  # type: ignore[arg-type]
        start_time_unix_nano=trace.start_ns, end_time_unix_nano=trace.end_ns,
        attributes=_kvs(server_attributes(trace).items()),
        status=Status(code=Status.STATUS_CODE_ERROR, message=error) if error is not None else None,
    )
    return [root, *(_stage(tid, s) for s in trace.children)]


def encode(traces: Sequence[Trace], resource: dict[str, str]) -> bytes:
    spans = [span for t in traces for span in spans_of(t)]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=_kvs(resource.items())),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="gateway", version=__version__),
                                spans=spans, schema_url=SCHEMA_URL)],
        schema_url=SCHEMA_URL,
    )])
    return req.SerializeToString()


class OtlpExporter:
    """The worker's span queue and the task that posts it to the collector."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.batcher: Batcher[Trace] = Batcher(
            "otlp", self._send, max_queue=settings.max_queue, batch_size=settings.max_batch,
            interval_s=settings.schedule_delay_s, write_timeout_s=settings.export_timeout_s)
        self.headers = {**settings.headers, "Content-Type": "application/x-protobuf"}
        if settings.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None
        self.put = self.batcher.put  # the one call a request makes

    def start(self) -> None:
        self.batcher.start()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx = ssl.create_default_context(cafile=self.settings.ca_file) if self.settings.ca_file else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                connector=aiohttp.TCPConnector(limit=2, ssl=ssl_ctx if ssl_ctx is not None else True))
        return self._session

    async def _send(self, batch: list[Trace]) -> None:
        body = encode(batch, self.settings.resource)
        if self.settings.gzip:
            body = gzip.compress(body, compresslevel=5)
        async with self._client().post(self.settings.endpoint, data=body, headers=self.headers) as resp:
            await resp.read()
            if resp.status // 100 != 2:
                raise ExportRefused(f"collector answered {resp.status}")

    async def close(self) -> None:
        await self.batcher.close(timeout_s=min(self.settings.export_timeout_s, 5.0))  # bounded stop
        if self._session is not None:
            await self._session.close()
            self._session = None
