"""The archive: every full request and answer, secrets redacted, in a durable sink (SQLite or PostgreSQL).

For cost attribution, compliance retrieval, audit replay and cache warming after a restart. Off by
default. Records are captured after the answer went out and redacted, encoded and written by the
batcher's task, never on the request path. One interface, two sinks:

    ArchiveSink.write(records) / get(request_id) / recent(limit, before) / close()
      SqliteArchive    one file on disk (the embedded default), shared by the machine's workers
      PostgresArchive  asyncpg pool, JSONB records (the cluster option)

Errors: sqlite3, asyncpg and socket exceptions become `StoreUnavailable` in one breaker per sink.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from typing import Any, Protocol

import msgspec

from gateway.observe.entry import AuditEntry
from gateway.observe.settings import ArchiveConfig
from gateway.store import StoreBreaker, StoreUnavailable
from gateway.store.sqlite import SqliteThread

__all__ = ["ArchiveRecord", "ArchiveSink", "StoreUnavailable", "open_archive", "redact", "redact_headers"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
                             "set-cookie", "x-goog-api-key"})
_PATTERNS = (
    (re.compile(rb"sk-[A-Za-z0-9_\-]{6,}"), b"sk-[redacted]"),
    (re.compile(rb"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]{6,}=*"), rb"\1 [redacted]"),
    (re.compile(rb'(?i)("(?:api[_-]?key|x-api-key|password|secret|access[_-]?token|client[_-]?secret)"\s*:\s*")'
                rb'(?:[^"\\]|\\.)*"'), rb'\1[redacted]"'),
)
_dec = msgspec.json.Decoder()


def redact(raw: bytes) -> bytes:
    """API keys (`sk-...`), bearer/basic credentials and secret-named JSON fields, always."""
    for pattern, repl in _PATTERNS:
        raw = pattern.sub(repl, raw)
    return raw


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: "[redacted]" if k.lower() in _SECRET_HEADERS else redact(v.encode()).decode("utf-8", "replace")
            for k, v in headers.items()}


class ArchiveRecord(msgspec.Struct, kw_only=True):
    request_id: str
    ts: float
    key_id: str | None
    endpoint: str
    model: str
    status: int
    stream: bool
    request_headers: dict[str, str]
    request: Any  # the JSON body, or its text when it isn't JSON
    response: Any  # the JSON answer, the list of streamed events, or None when not captured
    audit: AuditEntry
    truncated: bool = False


_rec_enc = msgspec.json.Encoder()
_rec_dec = msgspec.json.Decoder(ArchiveRecord)


def _body(raw: bytes, limit: int) -> tuple[Any, bool]:
    truncated = len(raw) > limit
    raw = redact(raw[:limit])
    if not truncated:
        try:
            return _dec.decode(raw), False
        except msgspec.DecodeError:
            pass
    return raw.decode("utf-8", "replace"), truncated


def build_record(entry: AuditEntry, headers: dict[str, str], request: bytes, response: bytes | None,
                 events: list[tuple[str | None, bytes]] | None, max_bytes: int) -> ArchiveRecord:
    """Runs in the batcher's task: redaction and decoding stay off the request path."""
    req, t1 = _body(request, max_bytes)
    resp: Any = None
    t2 = False
    if response is not None:
        resp, t2 = _body(response, max_bytes)
    elif events:
        resp = []
        for name, data in events:
            value, _ = _body(data, max_bytes)
            resp.append({"event": name, "data": value} if name else {"data": value})
    return ArchiveRecord(request_id=entry.request_id, ts=entry.ts, key_id=entry.key_id, endpoint=entry.endpoint,
                         model=entry.requested_model, status=entry.status, stream=entry.stream,
                         request_headers=redact_headers(headers), request=req, response=resp, audit=entry,
                         truncated=t1 or t2)


class ArchiveSink(Protocol):
    async def write(self, records: list[ArchiveRecord]) -> None: ...
    async def get(self, request_id: str) -> ArchiveRecord | None: ...
    async def recent(self, limit: int, before: float | None = None) -> list[ArchiveRecord]: ...
    async def close(self) -> None: ...


def open_archive(cfg: ArchiveConfig) -> ArchiveSink:
    if cfg.backend == "postgres":
        dsn = cfg.dsn or (os.environ.get(cfg.dsn_env, "") if cfg.dsn_env else "")
        if not dsn:
            raise ValueError("archive.dsn (or archive.dsn_env): required for the postgres backend")
        return PostgresArchive(dsn, cfg.table, cfg.retention_days)
    return SqliteArchive(cfg.path, cfg.retention_days)


_PURGE_EVERY_S = 300.0


class SqliteArchive:
    def __init__(self, path: str, retention_days: float = 30.0) -> None:
        self.path = path
        self.retention_s = retention_days * 86400.0
        self._db = SqliteThread(path, "archive", (
            "CREATE TABLE IF NOT EXISTS archive (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, key_id TEXT,"
            " model TEXT, status INTEGER, record BLOB NOT NULL);"
            "CREATE INDEX IF NOT EXISTS archive_ts ON archive (ts);"), busy_timeout_s=5.0)
        self._run = self._db.run
        self._next_purge = 0.0

    async def write(self, records: list[ArchiveRecord]) -> None:
        rows = [(r.request_id, r.ts, r.key_id, r.model, r.status, _rec_enc.encode(r)) for r in records]

        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany("INSERT OR IGNORE INTO archive VALUES (?, ?, ?, ?, ?, ?)", rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + _PURGE_EVERY_S
                c.execute("DELETE FROM archive WHERE ts < ?", (time.time() - self.retention_s,))

        await self._run(go)

    async def get(self, request_id: str) -> ArchiveRecord | None:
        def go(c: sqlite3.Connection) -> Any:
            return c.execute("SELECT record FROM archive WHERE request_id = ?", (request_id,)).fetchone()

        row = await self._run(go)
        return _rec_dec.decode(bytes(row[0])) if row else None

    async def recent(self, limit: int, before: float | None = None) -> list[ArchiveRecord]:
        def go(c: sqlite3.Connection) -> Any:
            return c.execute("SELECT record FROM archive WHERE ts < ? ORDER BY ts DESC LIMIT ?",
                             (before if before is not None else float("inf"), limit)).fetchall()

        return [_rec_dec.decode(bytes(r[0])) for r in await self._run(go)]

    async def close(self) -> None:
        await self._db.close()


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresArchive:
    """asyncpg, a small pool opened on first use (a database that is down doesn't hold up start-up)."""

    def __init__(self, dsn: str, table: str = "gateway_archive", retention_days: float = 30.0) -> None:
        import asyncpg

        if not _IDENT.match(table):
            raise ValueError(f"archive.table: {table!r} is not a plain lower-case SQL identifier")
        self.dsn = dsn
        self.table = table
        self.retention_s = retention_days * 86400.0
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._b = StoreBreaker("postgres-archive", (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                                                TimeoutError))
        self._next_purge = 0.0

    async def _open(self) -> Any:
        import asyncpg

        async with self._lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, timeout=5.0,
                                                 command_timeout=10.0)
                t = self.table
                await pool.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} (request_id text PRIMARY KEY, ts timestamptz NOT NULL,"
                    f" key_id text, model text, status integer, record jsonb NOT NULL);"
                    f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts);")
                self._pool = pool
        return self._pool

    async def write(self, records: list[ArchiveRecord]) -> None:
        rows = [(r.request_id, r.ts, r.key_id, r.model, r.status, _rec_enc.encode(r).decode()) for r in records]

        async def go() -> None:
            pool = await self._open()
            await pool.executemany(
                f"INSERT INTO {self.table} VALUES ($1, to_timestamp($2), $3, $4, $5, $6::jsonb)"
                " ON CONFLICT (request_id) DO NOTHING", rows)
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + _PURGE_EVERY_S
                await pool.execute(f"DELETE FROM {self.table} WHERE ts < to_timestamp($1)",
                                   time.time() - self.retention_s)

        await self._b.run(go)

    async def get(self, request_id: str) -> ArchiveRecord | None:
        async def go() -> Any:
            pool = await self._open()
            return await pool.fetchval(f"SELECT record::text FROM {self.table} WHERE request_id = $1",
                                       request_id)

        raw = await self._b.run(go)
        return _rec_dec.decode(raw) if raw else None

    async def recent(self, limit: int, before: float | None = None) -> list[ArchiveRecord]:
        async def go() -> Any:
            pool = await self._open()
            return await pool.fetch(
                f"SELECT record::text AS r FROM {self.table} WHERE ts < to_timestamp($1) ORDER BY ts DESC LIMIT $2",
                before if before is not None else time.time() + 86400.0, limit)

        return [_rec_dec.decode(row["r"]) for row in await self._b.run(go)]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
