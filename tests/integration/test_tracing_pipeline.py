"""Tracing wired into the pipeline: the real app (in-memory providers) exports to an in-process OTLP
receiver; the span tree, its GenAI attributes and the traceparent the provider receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.observe.tracecontext import parse_traceparent
from gateway.providers.mock_transport import MockRequest, MockResponse
from tests.integration.test_tracing_otlp import CLIENT_TP, CLIENT_TRACE, Receiver, attrs, receiver  # noqa: F401
from tests.unit.spine import Rig, chat, openai_ok

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("stream", [False, True])
async def test_spans_of_a_request_and_the_traceparent_upstream(tmp_path: Path, receiver: Receiver,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-pipeline-test")
    seen: list[dict[str, str]] = []

    async def upstream(req: MockRequest) -> MockResponse:
        seen.append(req.headers)
        return await openai_ok(req)

    async with Rig(tmp_path, {"oa": upstream}) as rig:
        body = chat(stream=stream, stream_options={"include_usage": True}, temperature=0, max_tokens=50)
        proto = await rig.send("/v1/chat/completions", body, {"traceparent": CLIENT_TP})
        assert proto.status == 200
        await rig.settled()
        assert rig.app.rt is not None
        await rig.app.rt.tracer.flush()
        spans = await receiver.wait_spans(5)
        again = await rig.send("/v1/chat/completions", body, {"traceparent": CLIENT_TP})  # a cache hit now
        assert again.headers["x-cache-hit"] == "true"
        await rig.settled()
        await rig.app.rt.tracer.flush()
        spans = await receiver.wait_spans(len(spans) + 4)
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    server = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert len(server) == 2 and all(s.trace_id.hex() == CLIENT_TRACE for s in spans)
    first, hit = sorted(server, key=lambda s: s.start_time_unix_nano)
    a = attrs(first)
    assert a["gen_ai.request.model"] == "gpt" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert attrs(hit)["gateway.cache.hit"] is True
    children = {s.name for s in spans if s.parent_span_id == first.span_id}
    assert {"gateway.limits", "gateway.policies", "gateway.cache.lookup"} <= children
    client_spans = [s for s in spans if s.kind == s.SPAN_KIND_CLIENT and s.trace_id == first.trace_id]
    assert len(client_spans) == 1  # the hit made no upstream call
    # The provider was sent the upstream-call span as its parent, in the client's trace.
    parsed = parse_traceparent(seen[0]["traceparent"])
    assert parsed is not None and parsed[0] == int(CLIENT_TRACE, 16)
    assert parsed[1] == int.from_bytes(client_spans[0].span_id, "big")
    assert len(seen) == 1
