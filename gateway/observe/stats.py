"""Figures over a window of audit entries: rates, hit ratio per phase, latency percentiles, savings.

One function serves the dashboard (`GET /api/vas/summary`) and `gateway events stats`, so both
show the same numbers for the same entries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import msgspec

from gateway.observe.entry import TIERS, AuditEntry

RATE_WINDOW_S = 10.0  # "live" requests per second: over the last ten seconds
TIMELINE_POINTS = 60


class Summary(msgspec.Struct, kw_only=True):
    since: float
    until: float
    requests: int
    rps: float  # over the last RATE_WINDOW_S seconds
    errors: int
    error_rate: float
    hits: int
    hit_ratio: float
    phases: dict[str, dict[str, float]]  # tier -> {"hits", "ratio"}
    routing: dict[str, int]
    latency_ms: dict[str, dict[str, float]]  # total/upstream/overhead/ttfb -> {"p50": ...}
    tokens: dict[str, int]
    dollars: dict[str, float]
    models: dict[str, int]
    statuses: dict[str, int]
    timeline_step_s: float
    timeline_rps: list[float]  # requests per second in TIMELINE_POINTS equal steps, oldest first


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no data."""
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo))


def summarize(entries: Iterable[AuditEntry], *, since: float, until: float | None = None,
              percentiles: Sequence[float] = (50, 90, 95, 99)) -> Summary:
    until = until if until is not None else time.time()
    series: dict[str, list[float]] = {"total": [], "upstream": [], "overhead": [], "ttfb": []}
    tokens = dict.fromkeys(("input", "output", "cached", "saved_cache", "saved_compression", "saved_compaction"),
                           0)
    dollars = dict.fromkeys(("cost", "saved_cache", "saved_compression", "saved_compaction", "saved_provider_cache",
                             "saved_total"), 0.0)
    phase_hits = dict.fromkeys(TIERS.values(), 0)
    routing: dict[str, int] = {}
    models: dict[str, int] = {}
    statuses: dict[str, int] = {}
    n = errors = hits = recent = 0
    step = max((until - since) / TIMELINE_POINTS, 1e-9)
    timeline = [0] * TIMELINE_POINTS
    for e in entries:
        if e.ts < since or e.ts > until:
            continue
        n += 1
        timeline[min(TIMELINE_POINTS - 1, int((e.ts - since) / step))] += 1
        if e.ts > until - RATE_WINDOW_S:
            recent += 1
        if e.status >= 400:
            errors += 1
        if e.metacache.hit:
            hits += 1
            tier = e.metacache.tier or "unknown"
            phase_hits[tier] = phase_hits.get(tier, 0) + 1
        routing[e.routing_strategy] = routing.get(e.routing_strategy, 0) + 1
        models[e.requested_model] = models.get(e.requested_model, 0) + 1
        statuses[str(e.status)] = statuses.get(str(e.status), 0) + 1
        series["total"].append(e.latency_ms)
        series["overhead"].append(e.overhead_ms)
        if e.upstream_ms is not None:
            series["upstream"].append(e.upstream_ms)
        if e.ttfb_ms is not None:
            series["ttfb"].append(e.ttfb_ms)
        tokens["input"] += e.tokens_in
        tokens["output"] += e.tokens_out
        tokens["cached"] += e.tokens_cached
        tokens["saved_cache"] += e.metacache.tokens_saved
        tokens["saved_compression"] += e.tokens_compressed
        tokens["saved_compaction"] += e.tokens_compacted
        dollars["cost"] += e.cost_usd
        dollars["saved_cache"] += e.saved_cache_usd
        dollars["saved_compression"] += e.saved_compression_usd
        dollars["saved_provider_cache"] += e.saved_provider_cache_usd
        dollars["saved_compaction"] += e.saved_compaction_usd
        dollars["saved_total"] += e.saved_usd
    latency: dict[str, dict[str, float]] = {}
    for name, values in series.items():
        values.sort()
        latency[name] = {f"p{_fmt(p)}": round(percentile(values, p), 3) for p in percentiles}
    span = min(RATE_WINDOW_S, max(until - since, 1e-9))
    return Summary(
        since=since, until=until, requests=n, rps=round(recent / span, 3), errors=errors,
        error_rate=errors / n if n else 0.0, hits=hits, hit_ratio=hits / n if n else 0.0,
        phases={t: {"hits": h, "ratio": h / n if n else 0.0} for t, h in phase_hits.items()},
        routing=routing, latency_ms=latency, tokens=tokens,
        dollars={k: round(v, 6) for k, v in dollars.items()}, models=models, statuses=statuses,
        timeline_step_s=step, timeline_rps=[round(c / step, 3) for c in timeline],
    )


def _fmt(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '2d' (or plain seconds) -> seconds."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)
