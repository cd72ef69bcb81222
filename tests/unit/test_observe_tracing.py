"""Tracing part: W3C traceparent parsing and propagation, sampling, OTEL_* settings, null part, GenAI metrics."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.observe.entry import AuditEntry, MetaCacheInfo
from gateway.observe.exposition import render
from gateway.observe.genai_metrics import GenAIMetrics
from gateway.observe.metrics import Metrics
from gateway.observe.traceconf import from_env
from gateway.observe.tracecontext import clean_tracestate, parse_traceparent, valid_traceparent
from gateway.observe.tracing import (
    CACHE_LOOKUP,
    NULL_SPAN,
    ForwardSpan,
    GenAIResult,
    NullTracer,
    Trace,
    Tracer,
    build_tracer,
    provider_name,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
SAMPLED = f"00-{TID}-{PID}-01"
UNSAMPLED = f"00-{TID}-{PID}-00"
ON = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}


def tracer(**env: str) -> Tracer:
    t = build_tracer({**ON, **env})
    assert isinstance(t, Tracer)
    return t


# ------------------------------------------------------------------------ traceparent


def test_parse_valid_traceparent() -> None:
    assert valid_traceparent(SAMPLED) and valid_traceparent(f"01-{TID}-{PID}-01-what-ever")
    assert parse_traceparent(SAMPLED) == (int(TID, 16), int(PID, 16), 1)
    assert parse_traceparent(f" {UNSAMPLED} ") == (int(TID, 16), int(PID, 16), 0)
    # A later version may add fields after the flags; the first four are read.
    assert parse_traceparent(f"01-{TID}-{PID}-01-what-ever") == (int(TID, 16), int(PID, 16), 1)


@pytest.mark.parametrize("value", [
    None, "", "garbage",
    f"00-{TID.upper()}-{PID}-01",  # upper-case hex is not allowed
    f"ff-{TID}-{PID}-01",  # version ff is forbidden
    f"00-{'0' * 32}-{PID}-01",  # all-zero trace id
    f"00-{TID}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TID}-{PID}-01-extra",  # version 00 has exactly four fields
    f"00-{TID[:-1]}-{PID}-01",
    f"00_{TID}_{PID}_01",
    f"01-{TID}-{PID}-01x",
])
def test_parse_rejects_invalid_traceparent(value: str | None) -> None:
    assert parse_traceparent(value) is None
    assert value is None or not valid_traceparent(value)


def test_tracestate_is_cut_to_32_members_and_512_chars() -> None:
    assert clean_tracestate(" a=1,b=2 ") == "a=1,b=2"
    assert clean_tracestate("") is None
    many = ",".join(f"k{i}=v" for i in range(40))
    assert clean_tracestate(many) == ",".join(f"k{i}=v" for i in range(32))
    long = ",".join(f"k{i}={'x' * 100}" for i in range(8))
    cut = clean_tracestate(long)
    assert cut is not None and len(cut) <= 512 and cut.count(",") == 3 and long.startswith(cut)  # 4 x 104 fit, 5 do not


# ------------------------------------------------------------------------ propagation


def test_sampled_parent_is_continued_and_forwarded_with_the_upstream_span_id() -> None:
    t = tracer()
    span = t.start_request({"traceparent": SAMPLED, "tracestate": "vendor=abc"}, "chat", "gpt-4o")
    assert isinstance(span, Trace)
    assert span.trace_id == int(TID, 16) and span.parent_id == int(PID, 16)
    before = span.outgoing_headers()["traceparent"]
    assert before == f"00-{TID}-{span.span_id:016x}-01"  # no upstream attempt yet: the request span
    up = span.upstream("openai", "gpt-4o-2024-08-06", "api.openai.com", 443)
    out = span.outgoing_headers()
    assert out == {"traceparent": f"00-{TID}-{up.span_id:016x}-01", "tracestate": "vendor=abc"}
    assert up.span_id not in (span.span_id, int(PID, 16))
    # A retry is a second attempt span: the next request names it.
    retry = span.upstream("openai", "gpt-4o-2024-08-06")
    assert span.outgoing_headers()["traceparent"].split("-")[2] == f"{retry.span_id:016x}"


def test_model_known_after_parse_names_the_span() -> None:
    span = tracer().start_request({}, "completions", "")
    assert isinstance(span, Trace)
    span.set_model("gpt-3.5-turbo-instruct")
    assert (span.operation, span.model) == ("text_completion", "gpt-3.5-turbo-instruct")
    NULL_SPAN.set_model("m")  # the null span takes it and keeps nothing


@pytest.mark.parametrize(("kind", "name"), [("openai", "openai"), ("azure", "azure.ai.openai"),
                                            ("anthropic", "anthropic"), ("gemini", "gcp.gemini"),
                                            ("bedrock", "aws.bedrock"), ("vllm", "vllm")])
def test_provider_names_follow_the_conventions(kind: str, name: str) -> None:
    assert provider_name(kind) == name


def test_no_parent_starts_a_new_trace() -> None:
    t = tracer()
    a = t.start_request({}, "chat", "m")
    b = t.start_request({"traceparent": "nonsense", "tracestate": "x=1"}, "chat", "m")
    assert isinstance(a, Trace) and isinstance(b, Trace)
    assert a.parent_id == 0 and b.parent_id == 0 and a.trace_id != b.trace_id
    assert b.tracestate is None  # tracestate without a valid traceparent is dropped, as W3C says
    assert parse_traceparent(a.outgoing_headers()["traceparent"]) is not None


def test_unsampled_parent_is_forwarded_unsampled_and_not_recorded() -> None:
    t = tracer()
    span = t.start_request({"traceparent": UNSAMPLED, "tracestate": "v=1"}, "chat", "m")
    assert isinstance(span, ForwardSpan)
    out = span.outgoing_headers()
    version, trace, parent, flags = out["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TID, "00") and parent != PID
    assert out["tracestate"] == "v=1"
    with span.child(CACHE_LOOKUP) as stage:
        stage.set("k", 1)
    span.finish(GenAIResult())
    assert len(t.exporter.batcher.queue) == 0


# ------------------------------------------------------------------------ sampling


def _with_low_bits(low: int) -> str:
    return f"00-{'ab' * 8}{low:016x}-{PID}-01"


def test_traceidratio_decides_on_the_low_64_bits_of_the_trace_id() -> None:
    t = tracer(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5")
    # Plain traceidratio ignores the parent's flag and samples by trace id.
    assert isinstance(t.start_request({"traceparent": _with_low_bits((1 << 63) - 1)}, "chat", "m"), Trace)
    assert isinstance(t.start_request({"traceparent": _with_low_bits(1 << 63)}, "chat", "m"), ForwardSpan)


def test_traceidratio_samples_about_the_ratio_of_new_traces() -> None:
    t = tracer(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25")
    n = 20_000
    kept = sum(isinstance(t.start_request({}, "chat", "m"), Trace) for _ in range(n))
    assert 0.23 < kept / n < 0.27  # binomial sd is 0.3 %: this fails only on a wrong rule


@pytest.mark.parametrize(("sampler", "parent", "expect"), [
    ("always_on", UNSAMPLED, True),
    ("always_off", SAMPLED, False),
    ("parentbased_always_on", SAMPLED, True),
    ("parentbased_always_on", UNSAMPLED, False),
    ("parentbased_always_on", None, True),
    ("parentbased_always_off", SAMPLED, True),
    ("parentbased_always_off", None, False),
    ("parentbased_traceidratio", SAMPLED, True),  # the parent wins over a zero ratio
    ("parentbased_traceidratio", None, False),
])
def test_samplers(sampler: str, parent: str | None, expect: bool) -> None:
    t = tracer(OTEL_TRACES_SAMPLER=sampler, OTEL_TRACES_SAMPLER_ARG="0")
    headers = {"traceparent": parent} if parent else {}
    assert isinstance(t.start_request(headers, "chat", "m"), Trace) is expect


# ------------------------------------------------------------------------ spans


def test_stage_records_errors_and_open_stages_end_with_the_request() -> None:
    t = tracer()
    span = t.start_request({}, "messages", "claude")
    assert isinstance(span, Trace) and span.operation == "chat"
    with pytest.raises(ValueError), span.child("gateway.limits"):
        raise ValueError("refused")
    left_open = span.child("gateway.policies")
    span.finish(GenAIResult(status=429, error_type="rate_limited"))
    span.finish(GenAIResult())  # a second finish neither re-queues nor overwrites
    limits, policies = span.children
    assert limits.error == "ValueError" and limits.end_ns >= limits.start_ns
    assert left_open is policies and policies.end_ns == span.end_ns
    assert span.result is not None and span.result.error_type == "rate_limited"
    assert list(t.exporter.batcher.queue) == [span]


def test_full_queue_drops_and_counts_without_raising() -> None:
    t = tracer(OTEL_BSP_MAX_QUEUE_SIZE="2")
    for _ in range(5):
        t.start_request({}, "chat", "m").finish(GenAIResult())
    assert len(t.exporter.batcher.queue) == 2 and t.dropped == 3


# ------------------------------------------------------------------------ off


def test_null_tracer_does_nothing_but_forward_a_valid_client_context() -> None:
    t = build_tracer({})
    assert isinstance(t, NullTracer) and not t.enabled
    assert t.start_request({}, "chat", "m") is NULL_SPAN
    assert t.start_request({"traceparent": "bad"}, "chat", "m") is NULL_SPAN
    assert NULL_SPAN.outgoing_headers() == {}
    span = t.start_request({"traceparent": SAMPLED, "tracestate": "a=1"}, "chat", "m")
    assert span.outgoing_headers() == {"traceparent": SAMPLED, "tracestate": "a=1"}
    with span.child(CACHE_LOOKUP) as stage:
        stage.set("x", 1)
        stage.end("e", 200)
    span.upstream("openai", "m").end()
    span.finish(GenAIResult())


# ------------------------------------------------------------------------ OTEL_* settings


@pytest.mark.parametrize("env", [
    {},
    {"OTEL_SERVICE_NAME": "gw"},  # naming the service alone does not turn export on
    {**ON, "OTEL_SDK_DISABLED": "true"},
    {**ON, "OTEL_TRACES_EXPORTER": "none"},
    {**ON, "OTEL_TRACES_EXPORTER": "zipkin"},
    {**ON, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
])
def test_tracing_is_off_unless_otlp_is_asked_for(env: dict[str, str]) -> None:
    assert not from_env(env).enabled


def test_settings_from_the_standard_variables() -> None:
    s = from_env({
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-team=ai",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=gateway",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_SERVICE_NAME": "edge-gw",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment.name=prod,team=a%2Cb",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
    })
    assert s.enabled and s.endpoint == "http://localhost:4318/v1/traces"
    assert s.headers == {"authorization": "Bearer abc", "x-team": "gateway"}
    assert s.timeout_s == 2.5 and s.gzip
    assert s.resource["service.name"] == "edge-gw" and s.resource["deployment.environment.name"] == "prod"
    assert s.resource["team"] == "a,b"
    assert (s.sampler, s.ratio) == ("parentbased_traceidratio", 0.1)
    assert (s.schedule_delay_s, s.max_queue, s.max_batch) == (0.2, 100, 10)


def test_endpoint_variables() -> None:
    assert from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}).endpoint == "http://c:4318/v1/traces"
    signal = from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                       "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t.example/otlp/traces"})
    assert signal.endpoint == "https://t.example/otlp/traces"  # the signal URL is used as given


@pytest.mark.parametrize(("arg", "ratio"), [("0.3", 0.3), ("", 1.0), ("2", 1.0), ("abc", 1.0)])
def test_sampler_argument(arg: str, ratio: float) -> None:
    s = from_env({**ON, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": arg})
    assert s.ratio == ratio
    assert from_env({**ON, "OTEL_TRACES_SAMPLER": "bogus"}).sampler == "parentbased_always_on"


# ------------------------------------------------------------------------ GenAI metrics


def test_genai_histograms_are_rendered_beside_the_gateway_metrics() -> None:
    reg = Metrics()
    g = reg.genai
    g.observe("chat", "openai", "gpt-4o", 2.0, ttft_s=0.5, input_tokens=100, output_tokens=31)
    g.observe("chat", "openai", "gpt-4o", 0.3, input_tokens=10, output_tokens=5)  # not streamed: no TTFT
    g.observe("chat", "openai", "gpt-4o", 0.1, ttft_s=0.05, error_type="upstream_error")
    text = render(reg, reg.snapshot()).decode()
    key = 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o"'
    assert f'gen_ai_client_token_usage_count{{{key},gen_ai_token_type="input"}} 2' in text
    assert f'gen_ai_client_token_usage_sum{{{key},gen_ai_token_type="output"}} 36' in text
    assert f'gen_ai_server_request_duration_seconds_count{{{key},error_type=""}} 2' in text
    assert f'gen_ai_server_request_duration_seconds_count{{{key},error_type="upstream_error"}} 1' in text
    assert f"gen_ai_server_time_to_first_token_seconds_count{{{key}}} 1" in text  # the failed one is left out
    assert f"gen_ai_server_time_to_first_token_seconds_sum{{{key}}} 0.5" in text
    # (2.0 - 0.5) s over the 30 tokens after the first.
    assert f"gen_ai_server_time_per_output_token_seconds_sum{{{key}}} 0.05" in text
    assert "# TYPE gen_ai_server_time_per_output_token_seconds histogram" in text


def test_genai_metrics_standalone_bucket_placement() -> None:
    g = GenAIMetrics()
    g.observe("embeddings", "openai", "te3", 0.015, input_tokens=16)
    counts, total = g.token_usage.series[("embeddings", "openai", "te3", "input")]
    assert counts[g.token_usage.bounds.index(16.0)] == 1 and total == 16.0
    assert g.duration.series[("embeddings", "openai", "te3", "")][0][1] == 1  # 0.01 < 0.015 <= 0.02


def test_audit_entries_feed_the_genai_histograms() -> None:
    reg = Metrics()
    common: dict[str, Any] = dict(ts=1.0, request_id="r", key_id="k", endpoint="messages", model="claude-x",
                                  requested_model="claude", provider="anthropic", routing_strategy="direct",
                                  routing_reason="provider:anthropic", overhead_ms=1.0)
    reg.observe(AuditEntry(**common, status=200, stream=True, latency_ms=1100.0, ttfb_ms=100.0, tokens_in=50,
                           tokens_out=11))
    reg.observe(AuditEntry(**common, status=200, latency_ms=5.0, ttfb_ms=4.0, tokens_in=50, tokens_out=11,
                           metacache=MetaCacheInfo(hit=True, phase=3, tier="exact")))
    reg.observe(AuditEntry(**common, status=502, error="upstream_error", latency_ms=30.0))
    g = reg.genai
    key = ("chat", "anthropic", "claude")
    assert sum(g.duration.series[(*key, "")][0]) == 2
    assert sum(g.duration.series[(*key, "upstream_error")][0]) == 1
    assert g.ttft.series[key][1] == pytest.approx(0.1)  # only the stream has a first token
    assert g.tpot.series[key][1] == pytest.approx(0.1)  # (1.1 - 0.1) s / 10 tokens
    assert g.token_usage.series[(*key, "output")][1] == 11  # the cache hit used no provider tokens
