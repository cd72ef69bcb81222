"""Latency statistics shared by `gateway bench` and `make bench`: percentiles, summaries, overhead.

Percentiles use the nearest-rank definition (the value below which p% of the samples fall, always
an observed sample), as HdrHistogram and wrk report them; no interpolation invents a latency that
never happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import msgspec

PERCENTILES = (50, 90, 95, 99)


class Summary(msgspec.Struct, omit_defaults=True):
    """One latency distribution, in milliseconds."""

    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float


class Overhead(msgspec.Struct):
    """A distribution minus the baseline's at the same load (what the gateway adds), ms."""

    p50: float
    p95: float
    p99: float
    max: float


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence; p in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(values_ms: Iterable[float]) -> Summary | None:
    """Summary of a sample, or None when it is empty (no successful request)."""
    ordered = sorted(values_ms)
    if not ordered:
        return None
    return Summary(
        count=len(ordered),
        p50=round(percentile(ordered, 50), 3),
        p90=round(percentile(ordered, 90), 3),
        p95=round(percentile(ordered, 95), 3),
        p99=round(percentile(ordered, 99), 3),
        max=round(ordered[-1], 3),
        mean=round(math.fsum(ordered) / len(ordered), 3),
    )


def overhead(sample: Summary | None, baseline: Summary | None) -> Overhead | None:
    """What `sample` adds over `baseline`, percentile by percentile (may be negative: noise)."""
    if sample is None or baseline is None:
        return None
    return Overhead(
        p50=round(sample.p50 - baseline.p50, 3),
        p95=round(sample.p95 - baseline.p95, 3),
        p99=round(sample.p99 - baseline.p99, 3),
        max=round(sample.max - baseline.max, 3),
    )


def success_rate(ok: int, total: int) -> float:
    """Share of requests answered with a 2xx; 0.0 when nothing was sent."""
    return round(ok / total, 6) if total > 0 else 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)
