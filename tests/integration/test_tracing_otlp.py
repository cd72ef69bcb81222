"""The tracing part against an in-process OTLP/HTTP receiver that decodes the protobuf it is sent.

Drives the part as the pipeline will (plain, streamed and cached request shapes) and asserts the span
tree, the GenAI attributes, the traceparent an upstream receives, and the exporter's behaviour when
the collector is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from structlog.testing import capture_logs

from gateway.observe.tracecontext import parse_traceparent
from gateway.observe.tracing import (
    CACHE_LOOKUP,
    LIMITS,
    POLICIES,
    SCHEMA_URL,
    GenAIResult,
    Trace,
    Tracer,
    build_tracer,
)
from tests.conftest import free_port

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"
CLIENT_TP = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(x) for x in v.array_value.values)
    return getattr(v, kind)


def attrs(span: Span) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}


class Receiver:
    """An OTLP/HTTP collector (`POST /v1/traces`) and an upstream that records the trace context."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.export_headers: list[dict[str, str]] = []
        self.upstream_headers: list[dict[str, str]] = []
        self.changed = asyncio.Condition()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def traces(self, request: web.Request) -> web.Response:
        # aiohttp inflates a gzip body itself (Content-Encoding), as a collector does.
        msg = ExportTraceServiceRequest.FromString(await request.read())
        async with self.changed:
            self.exports.append(msg)
            self.export_headers.append(dict(request.headers))
            self.changed.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def chat(self, request: web.Request) -> web.Response:
        self.upstream_headers.append(dict(request.headers))
        return web.json_response({"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06"})

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def spans(self) -> list[Span]:
        return [s for m in self.exports for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]

    async def wait_spans(self, n: int) -> list[Span]:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.spans()) >= n), 10)
        return self.spans()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start(free_port())
    yield r
    await r.stop()


Factory = Callable[..., Tracer]


@pytest.fixture
async def make_tracer() -> AsyncIterator[Factory]:
    made: list[Tracer] = []

    def make(port: int, **env: str) -> Tracer:
        made.append(_tracer(port, **env))
        return made[-1]

    yield make
    for t in made:
        await t.close()


def _tracer(port: int, **env: str) -> Tracer:
    t = build_tracer({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                      "OTEL_SERVICE_NAME": "gw-test", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci",
                      "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20collector-token", **env})
    assert isinstance(t, Tracer)
    return t


async def plain_request(tracer: Tracer, port: int, session: aiohttp.ClientSession, stream: bool) -> Trace:
    span = tracer.start_request({"traceparent": CLIENT_TP, "tracestate": "client=1"}, "chat", "gpt-4o")
    assert isinstance(span, Trace)
    with span.child(LIMITS):
        pass
    with span.child(POLICIES):
        pass
    with span.child(CACHE_LOOKUP) as lookup:
        lookup.set("gateway.cache.hit", False)
    up = span.upstream("openai", "gpt-4o", "127.0.0.1", port)
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={},
                            headers=span.outgoing_headers()) as resp:
        await resp.read()
        up.end(status=resp.status)
    span.finish(GenAIResult(
        provider="openai", response_model="gpt-4o-2024-08-06", response_id="chatcmpl-1", input_tokens=12,
        output_tokens=7, max_tokens=64, temperature=0.2, finish_reasons=("stop",), server_address="127.0.0.1",
        server_port=port, stream=stream, request_id="gw-1"))
    return span


def cached_request(tracer: Tracer) -> Trace:
    span = tracer.start_request({}, "chat", "gpt-4o")
    assert isinstance(span, Trace)
    with span.child(LIMITS):
        pass
    with span.child(CACHE_LOOKUP) as lookup:
        lookup.set("gateway.cache.hit", True)
        lookup.set("gateway.cache.phase", "exact")
    span.finish(GenAIResult(response_model="gpt-4o-2024-08-06", input_tokens=12, output_tokens=7,
                            finish_reasons=("stop",), cache_hit=True, cache_phase="exact"))
    return span


def tree(spans: list[Span], trace_id: str) -> tuple[Span, dict[str, Span]]:
    mine = [s for s in spans if s.trace_id.hex() == trace_id]
    roots = [s for s in mine if s.kind == Span.SPAN_KIND_SERVER]
    assert len(roots) == 1
    root = roots[0]
    children = {s.name: s for s in mine if s is not root}
    assert len(children) == len(mine) - 1  # names are unique within one request here
    for child in children.values():
        assert child.parent_span_id == root.span_id
        assert root.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= root.end_time_unix_nano
    return root, children


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_upstream_request_span_tree_and_genai_attributes(receiver: Receiver, make_tracer: Factory,
                                                               stream: bool) -> None:
    tracer = make_tracer(receiver.port)
    async with aiohttp.ClientSession() as session:
        await plain_request(tracer, receiver.port, session, stream)
    await tracer.flush()
    spans = await receiver.wait_spans(5)
    root, children = tree(spans, CLIENT_TRACE)
    assert set(children) == {LIMITS, POLICIES, CACHE_LOOKUP, "chat gpt-4o"}

    assert root.name == "chat gpt-4o" and root.parent_span_id.hex() == CLIENT_PARENT
    assert root.trace_state == "client=1" and root.status.code == Status.STATUS_CODE_UNSET
    assert root.flags & 0x301 == 0x301  # sampled, parent known to be remote
    assert attrs(root) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 7,
        "gen_ai.request.max_tokens": 64, "gen_ai.request.temperature": 0.2,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "127.0.0.1", "server.port": receiver.port, "http.response.status_code": 200,
        "gateway.cache.hit": False, "gateway.stream": stream, "gateway.request.id": "gw-1",
    }
    up = children["chat gpt-4o"]
    assert up.kind == Span.SPAN_KIND_CLIENT
    assert attrs(up) == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                         "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                         "server.address": "127.0.0.1", "server.port": receiver.port,
                         "http.response.status_code": 200}
    assert attrs(children[CACHE_LOOKUP]) == {"gateway.cache.hit": False}
    assert children[LIMITS].kind == Span.SPAN_KIND_INTERNAL

    # The upstream saw the client's trace, with the upstream-call span as its parent.
    (seen,) = receiver.upstream_headers
    assert parse_traceparent(seen["traceparent"]) == (int(CLIENT_TRACE, 16), int(up.span_id.hex(), 16), 1)
    assert seen["tracestate"] == "client=1"

    # Resource, scope, transport.
    rs = receiver.exports[0].resource_spans[0]
    res = {kv.key: value(kv.value) for kv in rs.resource.attributes}
    assert res["service.name"] == "gw-test" and res["deployment.environment.name"] == "ci"
    assert rs.scope_spans[0].scope.name == "gateway" and rs.schema_url == SCHEMA_URL
    sent = receiver.export_headers[0]
    assert sent["Content-Type"] == "application/x-protobuf"
    assert sent["Authorization"] == "Bearer collector-token"
    await tracer.close()


async def test_cached_request_has_no_upstream_span(receiver: Receiver, make_tracer: Factory) -> None:
    tracer = make_tracer(receiver.port, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    span = cached_request(tracer)
    await tracer.flush()
    spans = await receiver.wait_spans(3)
    root, children = tree(spans, f"{span.trace_id:032x}")
    assert set(children) == {LIMITS, CACHE_LOOKUP}
    assert root.parent_span_id == b"" and root.flags & 0x300 == 0x100  # a new trace: no remote parent
    a = attrs(root)
    assert a["gateway.cache.hit"] is True and a["gateway.cache.phase"] == "exact"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06" and a["gen_ai.usage.output_tokens"] == 7
    assert "gen_ai.provider.name" not in a  # nothing was asked of a provider
    assert attrs(children[CACHE_LOOKUP]) == {"gateway.cache.hit": True, "gateway.cache.phase": "exact"}
    assert receiver.export_headers[0]["Content-Encoding"] == "gzip"
    await tracer.close()


async def test_failed_request_marks_the_spans_as_errors(receiver: Receiver, make_tracer: Factory) -> None:
    tracer = make_tracer(receiver.port)
    span = tracer.start_request({}, "messages", "claude-sonnet-4")
    assert isinstance(span, Trace)
    up = span.upstream("anthropic", "claude-sonnet-4", "api.anthropic.com", 443)
    up.end("UpstreamStatus", status=529)
    span.finish(GenAIResult(status=502, provider="anthropic", error_type="upstream_error"))
    await tracer.flush()
    spans = await receiver.wait_spans(2)
    root, children = tree(spans, f"{span.trace_id:032x}")
    assert root.status.code == Status.STATUS_CODE_ERROR and root.status.message == "upstream_error"
    assert attrs(root)["error.type"] == "upstream_error" and attrs(root)["http.response.status_code"] == 502
    up_span = children["chat claude-sonnet-4"]
    assert up_span.status.code == Status.STATUS_CODE_ERROR
    assert attrs(up_span)["error.type"] == "UpstreamStatus" and attrs(up_span)["http.response.status_code"] == 529
    await tracer.close()


async def test_background_task_exports_without_an_explicit_flush(receiver: Receiver, make_tracer: Factory) -> None:
    tracer = make_tracer(receiver.port, OTEL_BSP_SCHEDULE_DELAY="20")
    tracer.start()
    traces = [cached_request(tracer) for _ in range(3)]
    spans = await receiver.wait_spans(9)
    assert {s.trace_id.hex() for s in spans} == {f"{t.trace_id:032x}" for t in traces}
    await tracer.close()


async def test_close_exports_what_is_left(receiver: Receiver, make_tracer: Factory) -> None:
    tracer = make_tracer(receiver.port)  # default 5 s delay: only close() can send it in time
    tracer.start()
    cached_request(tracer)
    await tracer.close()
    assert len(receiver.spans()) == 3


async def test_unreachable_collector_drops_counts_and_logs_once(make_tracer: Factory) -> None:
    port = free_port()  # nothing listens here yet
    tracer = make_tracer(port)
    with capture_logs() as logs:
        for _ in range(3):
            cached_request(tracer)  # the request path never sees the failure
        await tracer.flush()
        cached_request(tracer)
        await tracer.flush()
        assert tracer.dropped == 4 and tracer.exporter.batcher.failures == 2
        failed = [e for e in logs if e["event"] == "observe_sink_failed"]
        assert len(failed) == 1 and failed[0]["sink"] == "otlp"
        assert "collector-token" not in repr(logs)

        # The collector comes up: the next batch goes through and recovery is logged once.
        receiver = Receiver()
        await receiver.start(port)
        try:
            cached_request(tracer)
            await tracer.flush()
            assert len(await receiver.wait_spans(3)) == 3
        finally:
            await receiver.stop()
        assert [e["event"] for e in logs if e["event"].startswith("observe_sink")] == [
            "observe_sink_failed", "observe_sink_recovered"]
    await tracer.close()


async def test_a_batch_encoded_in_slices_is_one_export(receiver: Receiver, make_tracer: Factory) -> None:
    tracer = make_tracer(receiver.port, OTEL_BSP_MAX_EXPORT_BATCH_SIZE="100")
    traces = [cached_request(tracer) for _ in range(130)]  # 100 + 30, over several encoding slices
    await tracer.flush()
    spans = await receiver.wait_spans(3 * 130)
    assert len(receiver.exports) == 2 and len(spans) == 390
    assert [s.trace_id.hex() for s in spans if s.kind == Span.SPAN_KIND_SERVER] == [
        f"{t.trace_id:032x}" for t in traces]
