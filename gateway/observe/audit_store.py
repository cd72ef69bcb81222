"""Where audit entries live and how they are queried: a Redis stream (pods) or a SQLite table (one machine).

Chosen like the shared store (`store.redis_url` empty = embedded): every worker and every instance
pointed at the same Redis writes one stream (a few shards on a Cluster), so one query sees them all.
Both keep the newest `max_entries`; SQLite also drops rows older than the retention. Pages are newest
first; a cursor is opaque (stream ids, a row id). `after=<cursor>` reads forward instead, oldest first, for tails.

Errors: Redis, SQLite and socket exceptions become `StoreUnavailable` in the store's breaker
(`gateway.store.base.StoreBreaker`), the one boundary; an outage then fails fast until it probes again.
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any, Protocol

import msgspec

from gateway.observe.entry import AuditEntry, decoder
from gateway.store import StoreBreaker, StoreUnavailable
from gateway.store.redis import CLUSTER_LOG_SHARDS, spread_tags
from gateway.store.redis_url import redis_client
from gateway.store.sqlite import SqliteThread

__all__ = ["AuditQuery", "AuditSink", "Page", "StoreUnavailable", "open_audit_sink"]

SCAN_MAX = 20_000  # entries examined per query at most: a narrow filter returns a cursor, not a stall
_SLACK_S = 900.0  # an entry is written at most this long after its request started (long streams)


class AuditQuery(msgspec.Struct, kw_only=True):
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None
    model: str | None = None  # requested or deployment model
    key_id: str | None = None
    cache_hit: bool | None = None
    status: str | None = None  # "200", "4xx", "5xx"
    request_id: str | None = None
    limit: int = 50
    cursor: str | None = None  # older than this (next page)
    after: str | None = None  # newer than this, oldest first (tail); "0" = from the start

    def status_range(self) -> tuple[int, int] | None:
        s = (self.status or "").lower()
        if not s:
            return None
        if len(s) == 3 and s.endswith("xx") and s[0].isdigit():
            return int(s[0]) * 100, int(s[0]) * 100 + 99
        return int(s), int(s)

    def matches(self, e: AuditEntry) -> bool:
        if self.since is not None and e.ts < self.since:
            return False
        if self.until is not None and e.ts > self.until:
            return False
        if self.model is not None and self.model not in (e.model, e.requested_model):
            return False
        if self.key_id is not None and e.key_id != self.key_id:
            return False
        if self.cache_hit is not None and e.metacache.hit != self.cache_hit:
            return False
        if self.request_id is not None and e.request_id != self.request_id:
            return False
        rng = self.status_range()
        return rng is None or rng[0] <= e.status <= rng[1]


class Page(msgspec.Struct):
    entries: list[AuditEntry]
    next_cursor: str | None  # pass back as `cursor` (or `after` for a tail); None = nothing more
    head_cursor: str | None = None  # the newest position seen: `after=<it>` follows from there


class AuditSink(Protocol):
    async def write(self, entries: list[bytes]) -> None: ...
    async def query(self, q: AuditQuery) -> Page: ...
    async def close(self) -> None: ...


def open_audit_sink(redis_url: str | None, path: str, max_entries: int, retention_s: float) -> AuditSink:
    if redis_url:
        return RedisAuditSink(redis_url, max_entries)
    return SqliteAuditSink(path, max_entries, retention_s)


class RedisAuditSink:
    """A stream on standalone Redis; on a Cluster `shards` streams whose tags spread over the masters.

    Each write batch goes to one shard (round robin), so no master carries the whole log; each shard
    keeps `max_entries / shards`, about `max_entries` in all while writes are spread. A query merges
    the shards by stream id (milliseconds; ties by shard), and its cursor holds one position per shard.
    """

    KEY = "gw:audit"

    def __init__(self, url: str, max_entries: int, *, op_timeout_s: float = 2.0, shards: int | None = None) -> None:
        self._conn = redis_client(url, max_connections=4, connect_s=0.5, op_s=op_timeout_s)
        self._r: Any = self._conn.client
        n = shards or (CLUSTER_LOG_SHARDS if self._conn.cluster else 1)
        self._keys = [self.KEY] if n == 1 else [f"{self.KEY}:{{{t}}}" for t in spread_tags("audit", n)]
        self.max_entries = max_entries
        self._per_shard = max(1, max_entries // n)
        self._next = random.randrange(n)  # workers start on different shards
        self._b = StoreBreaker("redis-audit", self._conn.errors, self._conn.before_probe)

    async def write(self, entries: list[bytes]) -> None:
        key = self._keys[self._next % len(self._keys)]
        self._next += 1

        async def go() -> None:
            pipe = self._r.pipeline(transaction=False)
            for e in entries:
                pipe.xadd(key, {"e": e}, maxlen=self._per_shard, approximate=True)
            await pipe.execute()

        await self._b.run(go)

    async def query(self, q: AuditQuery) -> Page:
        return await self._b.run(lambda: self._scan(q))

    async def _scan(self, q: AuditQuery) -> Page:
        forward = q.after is not None
        n = len(self._keys)
        given = (q.after if forward else q.cursor) or ""
        start = given.split(",") if given and given != "0" else [""] * n
        if len(start) != n:
            start = [""] * n  # a cursor from another shard layout: start over
        if forward:
            bounds = ["-" if s in ("", "0") else "(" + s for s in start]
        else:
            top = f"{int((q.until + _SLACK_S) * 1000)}" if q.until else "+"
            bounds = ["(" + s if s else top for s in start]
        lo = f"{int(q.since * 1000)}" if q.since and not forward else "-"
        chunk = max(100, min(1000, q.limit * 4))
        bufs: list[list[tuple[bytes, dict[bytes, bytes]]]] = [[] for _ in range(n)]
        ended = [False] * n
        pos = list(start)
        heads: list[str] = [""] * n

        async def refill(i: int) -> None:
            rows = (await self._r.xrange(self._keys[i], min=bounds[i], max="+", count=chunk) if forward
                    else await self._r.xrevrange(self._keys[i], max=bounds[i], min=lo, count=chunk))
            ended[i] = len(rows) < chunk
            if rows:
                last = rows[-1][0].decode()
                bounds[i] = "(" + last
                heads[i] = heads[i] or rows[0][0].decode()
            bufs[i] = list(reversed(rows))  # pop() takes the next in order

        out: list[AuditEntry] = []
        scanned = 0
        while len(out) < q.limit and scanned < SCAN_MAX:
            for i in range(n):
                if not bufs[i] and not ended[i]:
                    await refill(i)
            live = [i for i in range(n) if bufs[i]]
            if not live:
                break
            pick = (min if forward else max)(live, key=lambda i: (_sid(bufs[i][-1][0]), i))
            sid, fields = bufs[pick].pop()
            pos[pick] = sid.decode()
            scanned += 1
            e = _decode(fields)
            if e is not None and q.matches(e):
                out.append(e)
        done = all(ended[i] and not bufs[i] for i in range(n))
        cursor = ",".join(pos)
        if forward:
            moved = cursor if any(pos) else (q.after or None)
            return Page(out, moved, moved)
        head = ",".join(h or "0-0" for h in heads) if any(heads) else None
        return Page(out, None if done else cursor, head)

    async def close(self) -> None:
        await self._conn.close()


def _sid(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


def _decode(fields: dict[bytes, bytes]) -> AuditEntry | None:
    try:
        return decoder.decode(fields[b"e"])
    except (msgspec.DecodeError, KeyError):
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
    model TEXT, requested_model TEXT, key_id TEXT, hit INTEGER NOT NULL, status INTEGER NOT NULL,
    request_id TEXT, entry BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""
_PURGE_EVERY_S = 30.0


class SqliteAuditSink:
    """One file shared by the machine's workers (WAL: readers beside one writer); one thread per worker."""

    def __init__(self, path: str, max_entries: int, retention_s: float, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.max_entries = max_entries
        self.retention_s = retention_s
        self._db = SqliteThread(path, "audit", _SCHEMA, busy_timeout_s=busy_timeout_ms / 1000)
        self._run = self._db.run
        self._next_purge = 0.0

    async def write(self, entries: list[bytes]) -> None:
        rows = []
        for raw in entries:
            e = decoder.decode(raw)
            rows.append((e.ts, e.model, e.requested_model, e.key_id, int(e.metacache.hit), e.status,
                         e.request_id, raw))

        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany("INSERT INTO audit (ts, model, requested_model, key_id, hit, status, request_id,"
                              " entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._maybe_purge(c)

        await self._run(go)

    def _maybe_purge(self, c: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_S
        c.execute("DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?", (self.max_entries,))
        c.execute("DELETE FROM audit WHERE ts < ?", (time.time() - self.retention_s,))

    async def query(self, q: AuditQuery) -> Page:
        where, args = _where(q)
        forward = q.after is not None
        if forward:
            where.append("id > ?")
            args.append(int(q.after or 0))
        elif q.cursor:
            where.append("id < ?")
            args.append(int(q.cursor))
        sql = (f"SELECT id, entry FROM audit {'WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?")
        args.append(q.limit + 1)

        def go(c: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return c.execute(sql, args).fetchall()

        rows = await self._run(go)
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        entries = [decoder.decode(bytes(raw)) for _, raw in rows]
        if forward:
            last = str(rows[-1][0]) if rows else (q.after or "0")
            return Page(entries, last, last)
        return Page(entries, str(rows[-1][0]) if more and rows else None, str(rows[0][0]) if rows else None)

    async def close(self) -> None:
        await self._db.close()


def _where(q: AuditQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if q.since is not None:
        where.append("ts >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("ts <= ?")
        args.append(q.until)
    if q.model is not None:
        where.append("(model = ? OR requested_model = ?)")
        args += [q.model, q.model]
    if q.key_id is not None:
        where.append("key_id = ?")
        args.append(q.key_id)
    if q.cache_hit is not None:
        where.append("hit = ?")
        args.append(int(q.cache_hit))
    if q.request_id is not None:
        where.append("request_id = ?")
        args.append(q.request_id)
    rng = q.status_range()
    if rng is not None:
        where.append("status BETWEEN ? AND ?")
        args += list(rng)
    return where, args
