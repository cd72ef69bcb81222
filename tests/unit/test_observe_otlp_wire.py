"""The hand-written OTLP protobuf equals what the official opentelemetry-proto classes build."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from gateway.observe.otlp_wire import RequestWriter, any_value, server_attributes, varint
from gateway.observe.tracing import CACHE_LOOKUP, SCHEMA_URL, GenAIResult, Trace, Tracer, build_tracer


def official_any(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, tuple):
        return AnyValue(array_value=ArrayValue(values=[official_any(x) for x in v]))
    return AnyValue(string_value=v)


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=official_any(v)) for k, v in attrs.items() if v is not None]


@pytest.mark.parametrize("v", [
    True, False, 0, 1, 127, 128, 300, 2**40, -1, -(2**63), 2**63 - 1, 0.0, 0.2, -1.5e300, "", "chat",
    "ünïcødé ✓", "x" * 200, "y" * 20_000, ("stop",), ("a", 1, True, 2.5), (), (("nested",),),
])
def test_any_value_matches_the_official_encoding(v: Any) -> None:
    assert AnyValue.FromString(any_value(v)) == official_any(v)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2**35, 2**64 - 1])
def test_varint(n: int) -> None:
    # AnyValue.int_value (field 3, an int64 varint) reads back any varint, the top half as negatives.
    assert AnyValue.FromString(b"\x18" + varint(n)).int_value == (n if n < 2**63 else n - 2**64)


def _trace(tracer: Tracer, headers: dict[str, str]) -> Trace:
    span = tracer.start_request(headers, "chat", "gpt-4o")
    assert isinstance(span, Trace)
    with span.child(CACHE_LOOKUP) as c:
        c.set("gateway.cache.hit", False)
    up = span.upstream("openai", "gpt-4o", "api.openai.com", 443)
    up.end("TimeoutError", status=504)
    span.set("gateway.key.name", "team-a")
    span.finish(GenAIResult(status=504, provider="openai", input_tokens=3, finish_reasons=("length", "stop"),
                            temperature=0.7, error_type="upstream_timeout"))
    return span


def test_request_matches_the_official_classes() -> None:
    tracer = build_tracer({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SERVICE_NAME": "svc"})
    assert isinstance(tracer, Tracer)
    resource = tracer.settings.resource
    traces = [_trace(tracer, {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              "tracestate": "k=v"}), _trace(tracer, {})]
    got = ExportTraceServiceRequest.FromString(RequestWriter(resource, "gateway", "1.2.3", SCHEMA_URL).encode(traces))

    def stage(t: Trace, i: int) -> Span:
        s = t.children[i]
        attrs = dict(s.attrs or {})
        if s.status is not None:
            attrs["http.response.status_code"] = s.status
        if s.error is not None:
            attrs["error.type"] = s.error
        return Span(trace_id=t.trace_id.to_bytes(16, "big"), span_id=s.span_id.to_bytes(8, "big"),
                    parent_span_id=t.span_id.to_bytes(8, "big"), name=s.name, kind=s.kind,  # type: ignore[arg-type]
                    start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns, attributes=kvs(attrs),
                    status=Status(code=Status.STATUS_CODE_ERROR, message=s.error) if s.error else None,
                    flags=0x101)

    spans: list[Span] = []
    for t in traces:
        spans.append(Span(
            trace_id=t.trace_id.to_bytes(16, "big"), span_id=t.span_id.to_bytes(8, "big"),
            parent_span_id=t.parent_id.to_bytes(8, "big") if t.parent_id else b"", trace_state=t.tracestate or "",
            name="chat gpt-4o", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=t.start_ns,
            end_time_unix_nano=t.end_ns, attributes=kvs(server_attributes(t)),
            status=Status(code=Status.STATUS_CODE_ERROR, message="upstream_timeout"),
            flags=0x301 if t.parent_id else 0x101))
        spans += [stage(t, 0), stage(t, 1)]
    want = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=kvs(dict(resource))),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="gateway", version="1.2.3"), spans=spans,
                                schema_url=SCHEMA_URL)],
        schema_url=SCHEMA_URL)])
    assert got == want
    root = got.resource_spans[0].scope_spans[0].spans[0]
    assert {kv.key: kv.value for kv in root.attributes}["gateway.key.name"].string_value == "team-a"
