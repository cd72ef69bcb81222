"""Observability settings (audit log, metrics, dashboard, archive), resolved once per worker.

They are the `observe:` and `archive:` sections of the gateway configuration (gateway/config.py).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Literal

import msgspec


class ObserveConfig(msgspec.Struct, forbid_unknown_fields=True):
    audit: bool = True  # one audit entry per request, written to the store
    audit_max_entries: int = 100_000  # kept in the store (Redis stream MAXLEN, SQLite rows)
    audit_retention_s: float = 7 * 86400.0  # SQLite only: older rows are purged
    audit_path: str = ""  # embedded audit file; "" = audit.db beside store.embedded_path
    queue_max: int = 10_000  # per worker: entries waiting for the sink; beyond it they are dropped
    batch_size: int = 256  # a batch this large is written at once, without waiting for the tick
    flush_interval_s: float = 0.5
    metrics: bool = True  # GET /metrics
    metrics_dir: str = ""  # per-worker metric files; "" = a per-instance directory under /dev/shm or tmp
    metrics_dump_interval_s: float = 1.0
    dashboard: bool = True  # GET /dashboard and /api/vas/summary
    summary_window_s: float = 300.0  # what the dashboard's figures cover
    summary_max_entries: int = 2000  # audit entries read per summary at most
    dashboard_session_s: float = 12 * 3600.0  # a dashboard login lasts this long (or until the master key changes)


class ArchiveConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = False  # off by default: full requests and answers are personal data
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = ".gateway/archive.db"  # sqlite
    dsn: str = ""  # postgres, e.g. postgresql://user@host:5432/db
    dsn_env: str | None = None  # or the name of an environment variable holding the DSN
    table: str = "gateway_archive"
    queue_max: int = 2_000
    batch_size: int = 100
    flush_interval_s: float = 1.0
    max_body_bytes: int = 1_048_576  # larger bodies are truncated in the archive
    retention_days: float = 30.0


class Settings(msgspec.Struct):
    observe: ObserveConfig = msgspec.field(default_factory=ObserveConfig)
    archive: ArchiveConfig = msgspec.field(default_factory=ArchiveConfig)


def resolve(cfg: Any) -> Settings:
    """The `observe:` and `archive:` sections of the gateway configuration."""
    return Settings(observe=cfg.observe, archive=cfg.archive)


def audit_path(obs: ObserveConfig, embedded_path: str) -> str:
    return obs.audit_path or os.path.join(os.path.dirname(embedded_path) or ".", "audit.db")


def metrics_dir(obs: ObserveConfig) -> str:
    """One directory per gateway instance: Granian's workers share their parent, the server process."""
    if obs.metrics_dir:
        return obs.metrics_dir
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"gateway-metrics-{os.getuid()}-{os.getppid()}")
