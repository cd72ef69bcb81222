"""The OTLP trace protobuf (`ExportTraceServiceRequest`, opentelemetry-proto v1) written by hand.

Why by hand: the messages the gateway sends are a fixed handful, and the wire format is simple
(varints, fixed-width numbers, length-prefixed bytes). Building the same request with the protobuf
runtime's message classes cost about 35 microseconds per span here (one Python object per attribute
and value); writing bytes directly is several times cheaper and needs no protobuf at run time. The
tests decode this output with the official `opentelemetry-proto` classes, field by field.
Field numbers are those of opentelemetry/proto/{trace,common,resource}/v1/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.observe.tracing import SERVER

if TYPE_CHECKING:
    from gateway.observe.tracing import Stage, Trace

SAMPLED = 0x01
HAS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
STATUS_ERROR = 2  # Status.STATUS_CODE_ERROR
_MASK64 = (1 << 64) - 1
_double = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else varint(n)) + payload


def any_value(v: Any) -> bytes:
    """An AnyValue message body."""
    if v is True or v is False:  # before int: bool is an int
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + varint(v & _MASK64)  # int64: negative numbers as 64-bit two's complement
    if isinstance(v, float):
        return b"\x21" + _double(v)
    if isinstance(v, (tuple, list)):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", any_value(x)) for x in v))
    return _ld(b"\x0a", str(v).encode())


# Most attribute pairs repeat from span to span (operation, provider, model, address, status), so
# their encoding is kept; the type is part of the key because True == 1. Cleared when full, so
# one-off values (ids, token counts) cannot hold it.
_pairs: dict[tuple[bytes, str, type, Any], bytes] = {}
_MAX_PAIRS = 8192


def key_value(tag: bytes, key: str, v: Any) -> bytes:
    """A KeyValue in the field `tag` of its parent (Span.attributes is 9, Resource.attributes 1)."""
    cls = type(v)
    memo = cls is str or cls is int or cls is bool
    if memo:
        hit = _pairs.get((tag, key, cls, v))
        if hit is not None:
            return hit
    out = _ld(tag, _ld(b"\x0a", key.encode()) + _ld(b"\x12", any_value(v)))
    if memo:
        if len(_pairs) >= _MAX_PAIRS:
            _pairs.clear()
        _pairs[(tag, key, cls, v)] = out
    return out


def attributes(tag: bytes, attrs: Iterable[tuple[str, Any]]) -> bytes:
    return b"".join(key_value(tag, k, v) for k, v in attrs if v is not None)


def _status(error: str | None) -> bytes:
    if error is None:
        return b""
    return _ld(b"\x7a", _ld(b"\x12", error.encode()) + b"\x18" + varint(STATUS_ERROR))


# start_time_unix_nano (7, fixed64), end_time_unix_nano (8, fixed64), flags (16, fixed32): one pack.
_times_flags = struct.Struct("<BQBQBBI").pack
_KIND = {k: b"\x30" + bytes((k,)) for k in range(6)}
_names: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    out = _names.get(name)
    if out is None:
        if len(_names) >= 1024:
            _names.clear()
        out = _names[name] = _ld(b"\x2a", name.encode())
    return out


def span(trace_id: bytes, span_id: int, parent_id: int, name: str, kind: int, start_ns: int, end_ns: int,
         attrs: dict[str, Any], error: str | None, flags: int, trace_state: str | None = None) -> bytes:
    """One Span, as a ScopeSpans.spans field (2). `trace_id` is its field already: b"\x0a\x10" + 16 bytes."""
    parts = [trace_id, b"\x12\x08", span_id.to_bytes(8, "big"), _name(name), _KIND[kind],
             _times_flags(0x39, start_ns, 0x41, end_ns, 0x85, 0x01, flags)]
    if parent_id:
        parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))
    if trace_state:
        parts.append(_ld(b"\x1a", trace_state.encode()))
    parts += [key_value(b"\x4a", k, v) for k, v in attrs.items() if v is not None]
    if error is not None:
        parts.append(_status(error))
    return _ld(b"\x12", b"".join(parts))


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


def _stage(trace_id: bytes, s: Stage) -> bytes:
    attrs = dict(s.attrs) if s.attrs else {}
    if s.status is not None:
        attrs["http.response.status_code"] = s.status
    if s.error is not None:
        attrs["error.type"] = s.error
    return span(trace_id, s.span_id, s.parent_id, s.name, s.kind, s.start_ns, s.end_ns, attrs, s.error,
                SAMPLED | HAS_REMOTE)


def spans_of(trace: Trace) -> bytes:
    """One request's spans, each as a ScopeSpans.spans field."""
    tid = b"\x0a\x10" + trace.trace_id.to_bytes(16, "big")
    r = trace.result
    root = span(tid, trace.span_id, trace.parent_id, f"{trace.operation} {trace.model}" if trace.model else
                trace.operation, SERVER, trace.start_ns, trace.end_ns, server_attributes(trace),
                r.error_type if r is not None else None,
                SAMPLED | HAS_REMOTE | (IS_REMOTE if trace.parent_id else 0), trace.tracestate)
    return root + b"".join(_stage(tid, s) for s in trace.children)


class RequestWriter:
    """Encodes batches for one resource and instrumentation scope (their bytes are built once)."""

    def __init__(self, resource: dict[str, str], scope_name: str, scope_version: str, schema_url: str) -> None:
        self.resource = _ld(b"\x0a", attributes(b"\x0a", resource.items()))  # ResourceSpans.resource
        self.scope = _ld(b"\x0a", _ld(b"\x0a", scope_name.encode()) + _ld(b"\x12", scope_version.encode()))
        self.schema = _ld(b"\x1a", schema_url.encode())

    @staticmethod
    def spans(traces: Iterable[Trace]) -> bytes:
        """Part of a request: the spans of some traces (the parts of one request are concatenated)."""
        return b"".join(spans_of(t) for t in traces)

    def request(self, parts: Iterable[bytes]) -> bytes:
        scope_spans = _ld(b"\x12", self.scope + b"".join(parts) + self.schema)
        return _ld(b"\x0a", self.resource + scope_spans + self.schema)  # ExportTraceServiceRequest.resource_spans

    def encode(self, traces: Sequence[Trace]) -> bytes:
        return self.request((self.spans(traces),))
