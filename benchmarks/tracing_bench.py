"""Cost per request of the tracing part: NullTracer vs Tracer, on the request path and in the exporter.

    .venv/bin/python benchmarks/tracing_bench.py [--repeat 9] [--json out.json]

Each figure is the fastest of `--repeat` timeit runs (CPU time, so that the shared machine adds
no waiting) of one request's calls on the part, as the pipeline makes them: start_request, the
limits / policies / cache lookup stage spans, the upstream span and outgoing_headers (plain shape
only), finish. "export" is the flusher's share per request: encoding 512-request batches
(gateway/observe/otlp_wire.py), plus gzip when asked; it runs on the worker's loop but off any
request's latency. The network post (one per batch) is not counted. The GenAI histograms are timed
too. Nothing here asserts a bound: the numbers are for the README and the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.observe.genai_metrics import GenAIMetrics  # noqa: E402
from gateway.observe.tracing import (  # noqa: E402
    CACHE_LOOKUP,
    LIMITS,
    POLICIES,
    GenAIResult,
    NullTracer,
    Trace,
    Tracer,
    build_tracer,
)

CLIENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "c=1",
          "content-type": "application/json", "authorization": "Bearer x"}
PLAIN = {"content-type": "application/json", "authorization": "Bearer x"}
ON = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def median_us(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)  # CPU time: the shared machine adds wait, not work
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6  # the least disturbed run


PLAIN_RESULT = GenAIResult(provider="openai", response_model="gpt-4o-2024-08-06", input_tokens=120,
                           output_tokens=40, max_tokens=256, temperature=0.2, finish_reasons=("stop",),
                           server_address="api.openai.com", server_port=443, request_id="gw-1")


def plain(tracer: Tracer | NullTracer, headers: dict[str, str]) -> Callable[[], None]:
    result = PLAIN_RESULT
    drain = _drain(tracer)

    def run() -> None:
        span = tracer.start_request(headers, "chat", "gpt-4o")
        with span.child(LIMITS):
            pass
        with span.child(POLICIES):
            pass
        with span.child(CACHE_LOOKUP) as c:
            c.set("gateway.cache.hit", False)
        up = span.upstream("openai", "gpt-4o", "api.openai.com", 443)
        span.outgoing_headers()
        up.end(status=200)
        span.finish(result)
        drain()

    return run


def cached(tracer: Tracer | NullTracer, headers: dict[str, str]) -> Callable[[], None]:
    result = GenAIResult(response_model="gpt-4o-2024-08-06", input_tokens=120, output_tokens=40,
                         finish_reasons=("stop",), cache_hit=True, cache_phase="exact")
    drain = _drain(tracer)

    def run() -> None:
        span = tracer.start_request(headers, "chat", "gpt-4o")
        with span.child(LIMITS):
            pass
        with span.child(CACHE_LOOKUP) as c:
            c.set("gateway.cache.phase", "exact")
        span.finish(result)
        drain()

    return run


def _drain(tracer: Tracer | NullTracer) -> Callable[[], object]:
    # Keep the queue from filling (a full one would make finish() cheaper: it drops).
    if isinstance(tracer, Tracer):
        return tracer.exporter.batcher.queue.clear
    return lambda: None


def export_us(gzip_on: bool, repeat: int) -> float:
    tracer = build_tracer({**ON, "OTEL_BSP_MAX_QUEUE_SIZE": "1000000"})
    assert isinstance(tracer, Tracer)
    q = tracer.exporter.batcher.queue
    traces: list[Trace] = []
    for _ in range(512):
        span = tracer.start_request(CLIENT, "chat", "gpt-4o")
        assert isinstance(span, Trace)
        for name in (LIMITS, POLICIES, CACHE_LOOKUP):
            span.child(name).end()
        span.upstream("openai", "gpt-4o", "api.openai.com", 443).end(status=200)
        span.finish(PLAIN_RESULT)
        traces.append(q.pop())
    encode = tracer.exporter.writer.encode
    if gzip_on:
        import gzip

        return median_us(lambda: gzip.compress(encode(traces), compresslevel=1), repeat) / len(traces)
    return median_us(lambda: encode(traces), repeat) / len(traces)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = args.repeat
    null = NullTracer()
    on = build_tracer({**ON, "OTEL_TRACES_SAMPLER": "always_on"})
    off = build_tracer({**ON, "OTEL_TRACES_SAMPLER": "always_off"})
    rows: dict[str, float] = {
        "null, plain request": median_us(plain(null, PLAIN), r),
        "null, plain request, client traceparent (forwarded)": median_us(plain(null, CLIENT), r),
        "null, cached request": median_us(cached(null, PLAIN), r),
        "on, unsampled, plain request": median_us(plain(off, CLIENT), r),
        "on, sampled, plain request (6 spans)": median_us(plain(on, CLIENT), r),
        "on, sampled, plain request, new trace": median_us(plain(on, PLAIN), r),
        "on, sampled, cached request (3 spans)": median_us(cached(on, PLAIN), r),
        "export: protobuf encode per plain request (flusher)": export_us(False, r),
        "export: encode + gzip per plain request (flusher)": export_us(True, r),
    }
    g = GenAIMetrics()
    rows["GenAI histograms, one streamed request"] = median_us(
        lambda: g.observe("chat", "openai", "gpt-4o", 1.2, ttft_s=0.2, input_tokens=120, output_tokens=40), r)
    width = max(map(len, rows))
    print(f"{'per request':<{width}}  microseconds")
    for name, us in rows.items():
        print(f"{name:<{width}}  {us:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
