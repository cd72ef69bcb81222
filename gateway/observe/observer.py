"""One worker's observability state: `record` (after-work), the audit and archive batchers, metric dumps.

What a request pays (after the answer went out): one AuditEntry built from the context's slots, a
few dict increments, one or two deque appends. Encoding, redaction and every write happen in
background tasks; gauges are read at dump and scrape time only, from the `Sources` they watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, NamedTuple

import structlog

from gateway.observe.archive import ArchiveRecord, ArchiveSink, build_record
from gateway.observe.audit_store import AuditSink
from gateway.observe.batcher import Batcher
from gateway.observe.entry import TIERS, AuditEntry, encoder, entry_from_ctx
from gateway.observe.metrics import Metrics, ModelLabels, Snapshot, dump, load_others, merge, observe_resilience
from gateway.observe.settings import Settings
from gateway.worker.lifecycle import stop_task

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from gateway.cache.metacache import MetaCache
    from gateway.pipeline.context import RequestContext
    from gateway.providers.resilience import Resilience
    from gateway.providers.shedding import Admission
    from gateway.providers.upstream import Provider
    from gateway.store import Store

log = structlog.get_logger("gateway.observe")

# (entry, request headers, request body, plain answer, streamed events)
Capture = tuple[AuditEntry, dict[str, str], bytes, bytes | None, list[tuple[str | None, bytes]] | None]


class Sources(NamedTuple):
    """What the gauges read at scrape time (the worker's pools, store, cache and loop monitor)."""

    providers: Mapping[str, Provider]
    store: Store | None
    cache: MetaCache | None
    loop_lag_ms: Callable[[], float]
    resilience: Resilience | None = None
    admission: Admission | None = None


class Observer:
    def __init__(self, settings: Settings, sources: Sources | None, audit_sink: AuditSink | None,
                 archive_sink: ArchiveSink | None, metrics_dir: str, models: ModelLabels | None = None) -> None:
        self.settings = settings
        self.sources = sources
        self.pid = os.getpid()
        self.metrics = Metrics(models)  # model labels only from configured routes (bounded)
        self.metrics_dir = metrics_dir
        obs, arc = settings.observe, settings.archive
        self.audit_sink = audit_sink
        self.archive_sink = archive_sink
        self.audit: Batcher[AuditEntry] | None = None
        self.archive: Batcher[Capture] | None = None
        if audit_sink is not None:
            self.audit = Batcher("audit", self._write_audit, max_queue=obs.queue_max,
                                 batch_size=obs.batch_size, interval_s=obs.flush_interval_s)
        if archive_sink is not None:
            self.archive = Batcher("archive", self._write_archive, max_queue=arc.queue_max,
                                   batch_size=arc.batch_size, interval_s=arc.flush_interval_s)
        self._dumper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ request path (after the answer)

    @property
    def wants_events(self) -> bool:
        """The archive keeps streamed answers: their events must be collected as they pass."""
        return self.archive is not None

    def record(self, ctx: RequestContext) -> None:
        entry = entry_from_ctx(ctx)
        self.metrics.observe(entry)
        if self.audit is not None:
            self.audit.put(entry)
        if self.archive is not None:
            self.archive.put((entry, ctx.headers, ctx.body, ctx.response, ctx.events))

    # ------------------------------------------------------------------ background

    async def _write_audit(self, batch: list[AuditEntry]) -> None:
        assert self.audit_sink is not None
        await self.audit_sink.write([encoder.encode(e) for e in batch])

    async def _write_archive(self, batch: list[Capture]) -> None:
        assert self.archive_sink is not None
        limit = self.settings.archive.max_body_bytes
        records: list[ArchiveRecord] = [build_record(e, h, req, resp, ev, limit) for e, h, req, resp, ev in batch]
        await self.archive_sink.write(records)

    def start(self) -> None:
        for b in (self.audit, self.archive):
            if b is not None:
                b.start()
        if self.settings.observe.metrics:
            self._dumper = asyncio.ensure_future(self._dump_loop())

    async def _dump_loop(self) -> None:
        interval = self.settings.observe.metrics_dump_interval_s
        while True:
            await asyncio.sleep(interval)
            self.dump()

    def dump(self) -> None:
        try:
            dump(self.local_snapshot(), self.metrics_dir, self.pid)
        except OSError as exc:
            log.warning("metrics_dump_failed", error=repr(exc))

    def local_snapshot(self) -> Snapshot:
        self.refresh_gauges()
        return self.metrics.snapshot()

    def pod_snapshot(self) -> Snapshot:
        """This worker's live values plus every other worker's last dump."""
        return merge([(self.local_snapshot(), True), *load_others(self.metrics_dir, self.pid)])

    def refresh_gauges(self) -> None:
        m = self.metrics
        m.gauge("gateway_workers", "Live worker processes.", ()).set((), 1.0)
        dropped = m.counter("gateway_observe_dropped_total", "Audit or archive records dropped (queue full "
                            "or sink unavailable).", ("sink",))
        written = m.counter("gateway_observe_written_total", "Audit or archive records written.", ("sink",))
        depth = m.gauge("gateway_observe_queue_depth", "Records waiting for their sink.", ("sink",))
        for b in (self.audit, self.archive):
            if b is not None:
                dropped.values[(b.name,)] = float(b.dropped)
                written.values[(b.name,)] = float(b.written)
                depth.set((b.name,), float(len(b.queue)))
        src = self.sources
        if src is not None:
            m.gauge("gateway_event_loop_lag_seconds", "How late each worker's event loop wakes (EWMA).",
                    ()).set((), src.loop_lag_ms() / 1000.0)
            _pool_gauges(m, src)
            _cache_gauges(m, src)
            if src.resilience is not None:
                observe_resilience(m, src.resilience.breakers, src.admission, src.resilience.budgets)

    async def close(self) -> None:
        await stop_task(self._dumper)
        for b in (self.audit, self.archive):
            if b is not None:
                await b.close()
        for sink in (self.audit_sink, self.archive_sink):
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.close()
        if self.settings.observe.metrics:
            self.metrics.gauges.pop("gateway_workers", None)  # a stopped worker is not live
            self.dump()


def _pool_gauges(m: Metrics, src: Sources) -> None:
    g = m.gauge("gateway_pool_connections", "Upstream keep-alive connections per provider.",
                ("provider", "state"))
    for name, provider in src.providers.items():
        if provider.transport is None:
            continue
        in_use, idle = provider.transport.pool_state()
        g.set((name, "in_use"), float(in_use))
        g.set((name, "idle"), float(idle))


def _cache_gauges(m: Metrics, src: Sources) -> None:
    store = src.store
    if store is not None:
        m.gauge("gateway_store_degraded", "1 while the shared store is unreachable.", ()).set(
            (), float(bool(store.degraded)))
    cache = src.cache
    if cache is None:
        return
    stats = cache.stats
    lookups = m.counter("gateway_cache_lookups_total", "MetaCache lookups per phase.", ("phase",))
    hits = m.counter("gateway_cache_hits_total", "MetaCache hits per phase.", ("phase",))
    vetoes = m.counter("gateway_cache_vetoes_total", "Candidates the verifier refused, per phase.", ("phase",))
    for phase, ps in (getattr(stats, "phases", None) or {}).items():
        tier = TIERS.get(phase, str(phase))
        lookups.values[(tier,)] = float(getattr(ps, "lookups", 0))
        hits.values[(tier,)] = float(getattr(ps, "hits", 0))
        vetoes.values[(tier,)] = float(getattr(ps, "vetoes", 0))
    skips = m.counter("gateway_cache_phase_skips_total",
                      "Phases not run: not applicable, store down, or (phase 4) the embedder or loop busy.", ("phase",))
    unjudged = m.counter("gateway_cache_unjudged_total",
                         "Lookups whose candidates the verifier could not judge within cache.verify_budget_ms.",
                         ("phase",))
    for phase, ps in (getattr(stats, "phases", None) or {}).items():
        skips.values[(TIERS.get(phase, str(phase)),)] = float(getattr(ps, "skips", 0))
        unjudged.values[(TIERS.get(phase, str(phase)),)] = float(getattr(ps, "unjudged", 0))
    vs = getattr(getattr(cache, "verifier", None), "stats", None)
    if vs is not None:  # the cross-encoder's own counters
        m.counter("gateway_verifier_pairs_total", "Candidate pairs run through the cross-encoder.",
                  ()).values[()] = float(getattr(vs, "judged", 0))
        m.counter("gateway_verifier_probes_total", "Cross-encoder batches let in despite a slow estimate.",
                  ()).values[()] = float(getattr(vs, "probes", 0))
        m.counter("gateway_verifier_truncated_total", "Lookups judged on their best candidates only.",
                  ()).values[()] = float(getattr(vs, "truncated", 0))
        m.counter("gateway_ml_seconds_total", "Wall time inside the ML models (the worker's ML thread).",
                  ("model",)).values[("verifier",)] = float(getattr(vs, "seconds", 0.0))
    m.counter("gateway_cache_lookup_requests_total", "Cacheable requests looked up in the MetaCache.",
              ()).values[()] = float(getattr(stats, "lookups", 0))
    index = getattr(cache, "index", None)
    if index is not None:
        m.gauge("gateway_cache_vectors", "Phase-4 vectors mirrored in this worker's memory.", ()).set(
            (), float(len(index)))
        m.gauge("gateway_cache_vector_bytes", "Memory of this worker's phase-4 vector mirror.", ()).set(
            (), float(index.nbytes))
    m.counter("gateway_cache_semantic_searches_total", "Phase-4 lookups that embedded the text and searched.",
              ()).values[()] = float(getattr(stats, "semantic_searches", 0))
    m.counter("gateway_cache_overload_skips_total", "Phase-4 lookups skipped because the worker was CPU-bound.",
              ()).values[()] = float(getattr(stats, "overload_skips", 0))
    embedder = getattr(cache, "embedder", None)
    es = getattr(embedder, "stats", None)
    if es is not None:
        m.counter("gateway_embeddings_total", "Texts run through the embedding model.", ()).values[()] = float(
            getattr(es, "embedded", 0))
        refused = m.counter("gateway_embed_refused_total", "Embeddings refused instead of queued.", ("reason",))
        refused.values[("saturated",)] = float(getattr(es, "saturated", 0))
        refused.values[("over_budget",)] = float(getattr(es, "over_budget", 0))
        m.counter("gateway_embed_probes_total", "Embeddings let in despite a slow estimate, to refresh it.",
                  ()).values[()] = float(getattr(es, "probes", 0))
        m.counter("gateway_ml_seconds_total", "Wall time inside the ML models (the worker's ML thread).",
                  ("model",)).values[("embedding",)] = float(getattr(es, "seconds", 0.0))
    stored = m.counter("gateway_cache_writes_total", "MetaCache entries written and evicted.", ("event",))
    stored.values[("stored",)] = float(getattr(stats, "stored", 0))
    stored.values[("evicted",)] = float(getattr(stats, "evicted", 0))
    entries = getattr(cache, "entry_count", None)
    count = entries() if callable(entries) else len(getattr(cache, "_l1", ()) or ())
    m.gauge("gateway_cache_entries", "Cache entries held in this worker's memory (L1).", ()).set((), float(count))
