"""Builds the observe part of a worker: the observer (after-work: audit entry, metrics, archive),
its sinks, and the HTTP routes it serves. Null twin for when observability is off."""

from __future__ import annotations

import os

import structlog

from gateway.config import Config
from gateway.governance.auth import Authenticator
from gateway.observe.api import ObserveAPI
from gateway.observe.archive import ArchiveSink, open_archive
from gateway.observe.audit_store import AuditSink, open_audit_sink
from gateway.observe.metrics import ModelLabels, prune_stale
from gateway.observe.observer import Observer, Sources
from gateway.observe.session import dashboard_sessions
from gateway.observe.settings import audit_path, metrics_dir, resolve
from gateway.pipeline.context import RequestContext
from gateway.worker.routes import Routes

log = structlog.get_logger("gateway.observe")


def build_observer(cfg: Config, sources: Sources, auth: Authenticator) -> tuple[Observer, Routes]:
    settings = resolve(cfg)
    obs_cfg = settings.observe
    store_cfg = cfg.store
    audit: AuditSink | None = None
    if obs_cfg.audit:
        audit = open_audit_sink(store_cfg.redis_url, audit_path(obs_cfg, store_cfg.embedded_path),
                                obs_cfg.audit_max_entries, obs_cfg.audit_retention_s)
    archive: ArchiveSink | None = open_archive(settings.archive) if settings.archive.enabled else None
    observer = Observer(settings, sources, audit, archive, metrics_dir(obs_cfg), ModelLabels.from_routes(cfg.models))
    if obs_cfg.metrics and not obs_cfg.metrics_dir:
        prune_stale(observer.metrics_dir)  # earlier runs' default directories (their server is gone)
    api = ObserveAPI(observer, auth, dashboard_sessions(cfg.auth.master_key_env, obs_cfg.dashboard_session_s))
    routes: Routes = {}
    if obs_cfg.metrics:
        routes[("GET", "/metrics")] = api.metrics
    if audit is not None:
        routes[("GET", "/api/vas/logs")] = api.logs
    if obs_cfg.dashboard:
        routes.update(api.routes())
    if archive is not None:
        routes[("GET", "/api/vas/archive")] = api.archive
    log.debug("observe_built", pid=os.getpid(), audit=type(audit).__name__ if audit else None,
              archive=type(archive).__name__ if archive else None, metrics_dir=observer.metrics_dir)
    return observer, routes


class NullObserver:
    """Observability off: nothing recorded, no routes."""

    wants_events = False

    def start(self) -> None:
        return None

    def record(self, ctx: RequestContext) -> None:
        return None

    async def close(self) -> None:
        return None
