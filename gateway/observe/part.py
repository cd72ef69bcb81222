"""Wires observability into a worker: the after-hook, the audit/archive sinks, and the HTTP routes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import structlog

from gateway.observe.api import ObserveAPI
from gateway.observe.archive import ArchiveSink, open_archive
from gateway.observe.audit_store import AuditSink, open_audit_sink
from gateway.observe.metrics import prune_stale
from gateway.observe.observer import Observer
from gateway.observe.settings import audit_path, metrics_dir, resolve

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.worker.runtime import Runtime

log = structlog.get_logger("gateway.observe")


async def install(app: GatewayApp, rt: Runtime) -> None:
    settings = resolve(rt.cfg)
    obs_cfg = settings.observe
    store_cfg = rt.cfg.store
    audit: AuditSink | None = None
    if obs_cfg.audit:
        audit = open_audit_sink(store_cfg.redis_url, audit_path(obs_cfg, store_cfg.embedded_path),
                                obs_cfg.audit_max_entries, obs_cfg.audit_retention_s)
    archive: ArchiveSink | None = open_archive(settings.archive) if settings.archive.enabled else None
    observer = Observer(settings, rt, audit, archive, metrics_dir(obs_cfg))
    if obs_cfg.metrics and not obs_cfg.metrics_dir:
        prune_stale(observer.metrics_dir)  # earlier runs' default directories (their server is gone)
    rt.after_hooks.append(observer.after)
    if archive is not None:
        rt.before_stages.append(observer.collect_streams)
    api = ObserveAPI(observer, rt)
    if obs_cfg.metrics:
        app.routes[("GET", "/metrics")] = api.metrics
    if audit is not None:
        app.routes[("GET", "/api/vas/logs")] = api.logs
    if obs_cfg.dashboard:
        app.routes[("GET", "/api/vas/summary")] = api.summary
        app.routes[("GET", "/dashboard")] = api.dashboard
    if archive is not None:
        app.routes[("GET", "/api/vas/archive")] = api.archive
    observer.start()
    rt.on_close(observer.close)
    log.debug("observe_installed", pid=os.getpid(), audit=type(audit).__name__ if audit else None,
              archive=type(archive).__name__ if archive else None, metrics_dir=observer.metrics_dir)
