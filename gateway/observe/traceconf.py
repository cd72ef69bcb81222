"""Tracing settings read once per worker from the standard `OTEL_*` environment variables.

Tracing is off unless asked for: `OTEL_TRACES_EXPORTER=otlp`, or an OTLP endpoint variable with
`OTEL_TRACES_EXPORTER` unset. `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` turn it off.
Only OTLP over HTTP with protobuf bodies is exported; another protocol or exporter is refused with
one warning (the gateway starts, untraced) rather than sending protobuf to a gRPC port.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import unquote

import msgspec
import structlog

log = structlog.get_logger("gateway.observe.tracing")

SamplerName = Literal["always_on", "always_off", "traceidratio",
                      "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"]
_SAMPLERS: tuple[str, ...] = SamplerName.__args__  # type: ignore[attr-defined]
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"


class TraceSettings(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = False
    endpoint: str = DEFAULT_ENDPOINT
    headers: dict[str, str] = {}
    timeout_s: float = 10.0
    gzip: bool = False
    ca_file: str | None = None
    sampler: SamplerName = "parentbased_always_on"
    ratio: float = 1.0
    resource: dict[str, str] = {}
    # Batch span processor (OTEL_BSP_*). The queue holds finished requests, each one span tree.
    schedule_delay_s: float = 5.0
    max_queue: int = 2048
    max_batch: int = 512
    export_timeout_s: float = 30.0


def _pairs(raw: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values (W3C Baggage form, as OTEL_* headers/attributes use)."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


def _truthy(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def _ms(env: Mapping[str, str], names: tuple[str, ...], default_ms: float) -> float:
    for name in names:
        raw = env.get(name, "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                log.warning("otel_env_invalid", variable=name, expected="milliseconds")
                continue
            if value >= 0:
                return value / 1000.0
    return default_ms / 1000.0


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if raw:
        log.warning("otel_env_invalid", variable=name, expected="a positive integer")
    return default


def _endpoint(env: Mapping[str, str]) -> str | None:
    signal = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return signal  # the signal-specific URL is used as given
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + "/v1/traces"
    return None


def _sampler(env: Mapping[str, str]) -> tuple[SamplerName, float]:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        log.warning("otel_sampler_unsupported", sampler=name, using="parentbased_always_on")
        name = "parentbased_always_on"
    ratio = 1.0
    if name.endswith("traceidratio"):
        raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = float(raw) if raw else 1.0
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            log.warning("otel_sampler_arg_invalid", value=raw, using=1.0)
            ratio = 1.0
    return name, ratio  # type: ignore[return-value]


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    attrs = {"service.name": "gateway", "telemetry.sdk.name": "gateway", "telemetry.sdk.language": "python",
             "process.pid": str(os.getpid())}
    attrs.update(_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attrs["service.name"] = service  # wins over OTEL_RESOURCE_ATTRIBUTES, as the spec says
    return attrs


def from_env(env: Mapping[str, str]) -> TraceSettings:
    """The settings for this worker; `enabled=False` unless the environment asks for OTLP export."""
    if _truthy(env, "OTEL_SDK_DISABLED"):
        return TraceSettings()
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    endpoint = _endpoint(env)
    if not exporters:
        if endpoint is None:
            return TraceSettings()  # off by default: nothing asked for tracing
        exporters = {"otlp"}
    if "none" in exporters:
        return TraceSettings()
    if "otlp" not in exporters:
        log.warning("otel_exporter_unsupported", exporters=sorted(exporters), supported="otlp")
        return TraceSettings()
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol != "http/protobuf":
        log.warning("otel_protocol_unsupported", protocol=protocol, supported="http/protobuf")
        return TraceSettings()
    compression = (env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
                   or env.get("OTEL_EXPORTER_OTLP_COMPRESSION") or "").strip().lower()
    headers = _pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    headers.update(_pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")))
    sampler, ratio = _sampler(env)
    return TraceSettings(
        enabled=True,
        endpoint=endpoint or DEFAULT_ENDPOINT,
        headers=headers,
        timeout_s=_ms(env, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"), 10_000),
        gzip=compression == "gzip",
        ca_file=(env.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
                 or env.get("OTEL_EXPORTER_OTLP_CERTIFICATE") or None),
        sampler=sampler,
        ratio=ratio,
        resource=resource_attributes(env),
        schedule_delay_s=_ms(env, ("OTEL_BSP_SCHEDULE_DELAY",), 5_000),
        max_queue=_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        max_batch=_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        export_timeout_s=_ms(env, ("OTEL_BSP_EXPORT_TIMEOUT",), 30_000),
    )
