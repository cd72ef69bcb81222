"""The OpenTelemetry GenAI metrics (semconv 1.37) as Prometheus histograms beside the gateway's own.

Names are the OpenTelemetry-to-Prometheus translation of the semconv names (dots to underscores,
the unit `s` as a `_seconds` suffix, `{token}` dropped): `gen_ai.client.token.usage` is
`gen_ai_client_token_usage`, `gen_ai.server.request.duration` is
`gen_ai_server_request_duration_seconds`, and so on. Buckets are the ones the conventions advise.
Labels are the conventions' attributes with underscores; the model is the requested one (bounded by
the configuration), never free text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.observe.metrics import Histogram
from gateway.observe.tracing import OPERATIONS

if TYPE_CHECKING:
    from gateway.observe.entry import AuditEntry

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

_OP = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


class GenAIMetrics:
    """Fed once per finished request by `observe(...)`; rendered by the worker's Metrics registry."""

    def __init__(self) -> None:
        self.token_usage = Histogram("gen_ai_client_token_usage", "GenAI tokens per request (input, output).",
                                     (*_OP, "gen_ai_token_type"), tuple(float(b) for b in TOKEN_BUCKETS))
        self.duration = Histogram("gen_ai_server_request_duration_seconds", "GenAI request duration, streams "
                                  "included.", (*_OP, "error_type"), DURATION_BUCKETS)
        self.ttft = Histogram("gen_ai_server_time_to_first_token_seconds", "Time to the first output token "
                              "(streamed, successful requests).", _OP, TTFT_BUCKETS)
        self.tpot = Histogram("gen_ai_server_time_per_output_token_seconds", "Time per output token after the "
                              "first (streamed, successful requests).", _OP, TPOT_BUCKETS)

    def histograms(self) -> list[Histogram]:
        return [self.token_usage, self.duration, self.ttft, self.tpot]

    def observe(self, operation: str, provider: str, model: str, duration_s: float, *,
                ttft_s: float | None = None, input_tokens: int | None = None, output_tokens: int | None = None,
                error_type: str | None = None) -> None:
        """One request: duration always; tokens when known; TTFT and TPOT for a successful stream."""
        key = (operation, provider, model)
        self.duration.observe((*key, error_type or ""), duration_s)
        if input_tokens:
            self.token_usage.observe((*key, "input"), float(input_tokens))
        if output_tokens:
            self.token_usage.observe((*key, "output"), float(output_tokens))
        if error_type is None and ttft_s is not None:
            self.ttft.observe(key, ttft_s)
            if output_tokens and output_tokens > 1 and duration_s > ttft_s:
                self.tpot.observe(key, (duration_s - ttft_s) / (output_tokens - 1))

    def observe_entry(self, e: AuditEntry) -> None:
        """One audit entry: TTFT is the first byte of a stream; a cache hit used no provider tokens."""
        failed = e.status >= 400
        self.observe(
            OPERATIONS.get(e.endpoint, e.endpoint), e.provider or "", e.requested_model, e.latency_ms / 1000.0,
            ttft_s=e.ttfb_ms / 1000.0 if e.stream and e.ttfb_ms is not None else None,
            input_tokens=None if e.metacache.hit else e.tokens_in,
            output_tokens=None if e.metacache.hit else e.tokens_out,
            error_type=(e.error or str(e.status)) if failed else None,
        )
