"""Cache operations for operators: what `gateway cache stats|clear` and `/admin/cache/*` answer.

Both the CLI (straight over the store) and the admin API (inside a worker) use these, so the two
say the same. Stats are gathered on an admin call and may scan the store; hit rates come from the
metrics the workers already keep (a pod's whole set of workers when the worker answering has the
multi-process metrics, else its own counters).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec

from gateway.cache import keys as K
from gateway.cache.generations import ALL, scope_of
from gateway.cache.metacache import MetaCache
from gateway.cache.types import TIERS, CacheStats

Series = list[tuple[tuple[str, ...], float]]


class PhaseRate(msgspec.Struct):
    lookups: int  # lookups that ran this phase (earlier phases missed, this one applied)
    hits: int
    vetoes: int  # candidates the verifier refused
    hit_rate: float | None  # share of all cache lookups this phase answered
    phase_hit_rate: float | None  # share of the lookups that ran this phase that it answered


class Rates(msgspec.Struct):
    source: str  # "pod (N workers)", "this worker", or "none"
    lookups: int
    hits: int
    hit_rate: float | None
    phases: dict[str, PhaseRate]


class Memory(msgspec.Struct):
    store_bytes: int | None
    store_source: str
    vectors: int | None = None  # phase-4 vectors mirrored in the workers' memory (this pod)
    vector_bytes: int | None = None


class Bound(msgspec.Struct):
    max_wrong_rate: float  # cache.max_wrong_rate: the bound the learned verifier's threshold keeps
    verifier: str  # "cross" (the cross-encoder), "learned" (the MLP), "rules" (no weights loaded) or "off"
    thresholds: dict[str, float] = {}  # per head, at that bound
    expected_recall: dict[str, float] = {}  # validation recall each head keeps at it


class Cleared(msgspec.Struct):
    scope: str
    at: float


class StatsReport(msgspec.Struct):
    store: str
    entries: int | None  # entries in the store (scoped clears leave unreachable ones to TTL and LRU)
    rates: Rates
    bound: Bound
    memory: Memory
    clears: list[Cleared]


class ClearRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: str | None = None
    key: str | None = None


class ClearReport(msgspec.Struct):
    scopes: list[str]
    at: float
    deleted: bool  # everything: the entries were also deleted from the store
    propagation_s: float  # every worker and pod stops serving the scopes within this


class MetricsView(Protocol):
    """What a merged metrics snapshot offers (gateway.observe.metrics.Snapshot)."""

    counters: dict[str, Series]
    gauges: dict[str, Series]


# ------------------------------------------------------------------------------ clear


def expand_models(model: str, routes: Iterable[Any]) -> list[str]:
    """A configured route's name and aliases (requests may name any of them), else the name as given."""
    for route in routes:
        names = [route.name, *route.aliases]
        if model in names and route.name != "*":
            return names
    return [model]


def scopes_for(req: ClearRequest, routes: Iterable[Any]) -> list[str]:
    if req.model is None:
        return [scope_of(None, req.key)]
    return [scope_of(m, req.key) for m in expand_models(req.model, routes)]


def check(req: ClearRequest) -> str | None:
    """The problem with a clear request, or None."""
    for name in ("model", "key"):
        value = getattr(req, name)
        if value is not None and (not value.strip() or len(value) > 256):
            return f"{name} must be a non-empty name of at most 256 characters"
    return None


async def clear(cache: MetaCache, req: ClearRequest, routes: Iterable[Any]) -> ClearReport:
    scopes = scopes_for(req, routes)
    at = await cache.clear(scopes)
    return ClearReport(scopes=scopes, at=at, deleted=scopes == [ALL],
                       propagation_s=cache.generations.refresh_s)


# ------------------------------------------------------------------------------ stats


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _by_phase(series: Series) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in series:
        out[labels[0]] = out.get(labels[0], 0.0) + value
    return out


def rates_from_metrics(snap: MetricsView, workers: int) -> Rates:
    c = snap.counters
    lookups = sum(v for _, v in c.get("gateway_cache_lookup_requests_total", []))
    per = {name: _by_phase(c.get(f"gateway_cache_{name}_total", [])) for name in ("lookups", "hits", "vetoes")}
    return _rates(f"pod ({workers} workers)", lookups, per)


def rates_from_stats(stats: CacheStats) -> Rates:
    per: dict[str, dict[str, float]] = {"lookups": {}, "hits": {}, "vetoes": {}}
    for phase, ps in stats.phases.items():
        tier = TIERS[phase]
        per["lookups"][tier], per["hits"][tier], per["vetoes"][tier] = ps.lookups, ps.hits, ps.vetoes
    return _rates("this worker", stats.lookups, per)


def _rates(source: str, lookups: float, per: dict[str, dict[str, float]]) -> Rates:
    phases = {}
    for tier in TIERS.values():
        ran, hits = per["lookups"].get(tier, 0.0), per["hits"].get(tier, 0.0)
        phases[tier] = PhaseRate(lookups=int(ran), hits=int(hits), vetoes=int(per["vetoes"].get(tier, 0.0)),
                                 hit_rate=_ratio(hits, lookups), phase_hit_rate=_ratio(hits, ran))
    total = sum(p.hits for p in phases.values())
    return Rates(source=source, lookups=int(lookups), hits=total, hit_rate=_ratio(total, lookups), phases=phases)


def bound_of(cache_cfg: Any, verifier: Any) -> Bound:
    bound = Bound(max_wrong_rate=cache_cfg.max_wrong_rate, verifier="off" if not cache_cfg.verifier else "rules")
    thresholds = getattr(verifier, "thresholds", None)
    if cache_cfg.verifier and isinstance(thresholds, dict):
        bound.verifier = getattr(verifier, "kind", "learned")
        bound.thresholds = {h: round(float(t), 4) for h, t in thresholds.items()}
        bound.expected_recall = {h: round(r, 4) for h, r in verifier.expected_recall().items()}
    return bound


async def stats(cache: MetaCache, cache_cfg: Any, verifier: Any, rates: Rates,
                vectors: tuple[int, int] | None) -> StatsReport:
    """Raises StoreUnavailable."""
    store = cache.shared_store
    mem = await store.memory()
    entries = await store.count(K.PREFIX + "e:")
    await cache.generations.refresh()
    clears = sorted((Cleared(scope, g.at) for scope, g in cache.generations.scopes.items()),
                    key=lambda c: -c.at)
    memory = Memory(store_bytes=mem.bytes, store_source=mem.detail,
                    vectors=vectors[0] if vectors else None, vector_bytes=vectors[1] if vectors else None)
    return StatsReport(store=mem.backend, entries=entries, rates=rates, bound=bound_of(cache_cfg, verifier),
                       memory=memory, clears=clears)


def vectors_from_metrics(snap: MetricsView) -> tuple[int, int] | None:
    g = snap.gauges
    if "gateway_cache_vectors" not in g:
        return None
    return (int(sum(v for _, v in g["gateway_cache_vectors"])),
            int(sum(v for _, v in g.get("gateway_cache_vector_bytes", []))))


def workers_of(snap: MetricsView) -> int:
    return int(sum(v for _, v in snap.gauges.get("gateway_workers", []))) or 1


# ------------------------------------------------------------------------------ the table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    x, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            break
        x /= 1024
    return f"{n} B" if unit == "B" else f"{x:.1f} {unit}"


def render(report: StatsReport) -> str:
    r, b, m = report.rates, report.bound, report.memory
    lines = [f"store          {report.store}",
             f"entries        {report.entries if report.entries is not None else '-'}",
             f"memory         {_size(m.store_bytes)} ({m.store_source})"]
    if m.vectors is not None:
        lines.append(f"vector index   {m.vectors} vectors, {_size(m.vector_bytes)} (this pod's workers)")
    lines.append(f"wrong-rate     <= {100 * b.max_wrong_rate:g}% ({b.verifier} verifier"
                 + (", thresholds " + ", ".join(f"{h} {t:g}" for h, t in b.thresholds.items())
                    + "; validation recall " + ", ".join(f"{h} {_pct(x)}" for h, x in b.expected_recall.items())
                    if b.thresholds else "") + ")")
    if not r.phases:
        lines.append(f"hit rate       - ({r.source})")
    else:
        lines += [f"hit rate       {_pct(r.hit_rate)} of {r.lookups} lookups ({r.source})", *_phase_table(r)]
    if report.clears:
        lines.append("clears (newest first)")
        for c in report.clears[:20]:
            lines.append(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(c.at))} UTC  {c.scope}")
    return "\n".join(lines)


def _phase_table(r: Rates) -> list[str]:
    rows: Sequence[tuple[str, ...]] = [("phase", "lookups", "hits", "vetoes", "of all", "of phase"),
                                       *((tier, str(p.lookups), str(p.hits), str(p.vetoes), _pct(p.hit_rate),
                                          _pct(p.phase_hit_rate)) for tier, p in r.phases.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
