"""A stand-in OpenTelemetry collector for the traced variant: takes OTLP/HTTP protobuf, counts spans.

`POST /v1/traces` decodes the `ExportTraceServiceRequest` (with the official opentelemetry-proto
classes, a dev dependency) and answers 200; `GET` returns how many spans arrived, so the harness
shows that the traced variant really exported its requests.

    granian --interface rsgi benchmarks.harness.otlp_sink:app
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_JSON = [("content-type", "application/json")]
_PB = [("content-type", "application/x-protobuf")]


class OtlpSink:
    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        body = await proto()
        if scope.method == "GET":
            proto.response_bytes(200, _JSON, b'{"spans":%d,"exports":%d}' % (self.spans, self.exports))
            return
        msg = ExportTraceServiceRequest.FromString(body)
        self.exports += 1
        self.spans += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
        proto.response_bytes(200, _PB, b"")


app = OtlpSink()
