"""The embedded store: SQLite in WAL mode, shared by every worker process on one machine, no server.

WAL lets readers run beside the one writer, and `busy_timeout` makes a writer wait for another
process's write instead of failing. Every call runs in a small thread pool (one connection per
thread) so the event loop never blocks on disk; sqlite3 releases the GIL while it works. Expiry is
a column checked on read; expired rows are purged now and then by whoever writes. Errors go through
the same `StoreBreaker` as Redis (see base.py).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.store.base import CLEAR, VLOG_MAX, EntryWrite, StoreBreaker, StoreMemory, StoreUnavailable, VecChange
from gateway.store.sqlite import connect_wal, create_schema

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lists (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
                                  item BLOB NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS lists_key ON lists (key, seq);
CREATE TABLE IF NOT EXISTS lru (grp TEXT NOT NULL, member TEXT NOT NULL, atime REAL NOT NULL,
                                PRIMARY KEY (grp, member)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lru_atime ON lru (grp, atime);
CREATE TABLE IF NOT EXISTS vectors (partition TEXT NOT NULL, member TEXT NOT NULL, vec BLOB NOT NULL,
                                    expires REAL NOT NULL, PRIMARY KEY (partition, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS maps (key TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL,
                                 PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vlog (seq INTEGER PRIMARY KEY AUTOINCREMENT, partition TEXT NOT NULL,
                                 member TEXT NOT NULL, vec BLOB);
"""
_PURGE_EVERY_S = 30.0


class EmbeddedStore:
    def __init__(
        self, path: str = ".gateway/store.db", *, threads: int = 2, busy_timeout_ms: int = 2000
    ) -> None:
        self.path = path
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self._busy_ms = busy_timeout_ms
        # Start-up may block: create the schema and switch the file to WAL (a persistent setting).
        create_schema(path, _SCHEMA, busy_timeout_ms / 1000)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        self._b = StoreBreaker("embedded", (sqlite3.Error, OSError))
        self._next_purge = time.monotonic() + _PURGE_EVERY_S

    @property
    def degraded(self) -> bool:
        return self._b.degraded

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path, self._busy_ms / 1000)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` in the store's thread pool behind its breaker (governance counters)."""
        return await self._run(fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await self._b.run(lambda: loop.run_in_executor(self._pool, lambda: fn(self._conn())))

    def _maybe_purge(self, c: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_S
        wall = time.time()
        c.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (wall,))
        c.execute("DELETE FROM lists WHERE expires <= ?", (wall,))
        c.execute("DELETE FROM vectors WHERE expires <= ?", (wall,))
        c.execute("DELETE FROM vlog WHERE seq <= (SELECT MAX(seq) FROM vlog) - ?", (VLOG_MAX,))

    # ------------------------------------------------------------------------------- key/value

    async def get(self, key: str) -> bytes | None:
        def q(c: sqlite3.Connection) -> bytes | None:
            row = c.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)", (key, time.time())
            ).fetchone()
            if row is None:
                return None
            value = row[0]  # counters are stored as integers
            return bytes(value) if isinstance(value, bytes) else str(value).encode()

        return await self._run(q)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        def q(c: sqlite3.Connection) -> list[bytes | None]:
            marks = ",".join("?" * len(keys))
            rows = c.execute(
                f"SELECT key, value FROM kv WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)",
                (*keys, time.time()),
            ).fetchall()
            found = {k: bytes(v) for k, v in rows}
            return [found.get(k) for k in keys]

        return await self._run(q) if keys else []

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        def q(c: sqlite3.Connection) -> None:
            expires = time.time() + ttl_s if ttl_s else None
            c.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)", (key, value, expires)
            )
            self._maybe_purge(c)

        await self._run(q)

    async def delete(self, *keys: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM kv WHERE key = ?", [(k,) for k in keys])

        if keys:
            await self._run(q)

    async def claim(self, key: str, ttl_s: float) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            now = time.time()
            # One statement: an expired holder is replaced, a live one kept (then no row changes).
            cur = c.execute(
                "INSERT INTO kv (key, value, expires) VALUES (?, x'31', ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value, expires = excluded.expires WHERE kv.expires IS NOT NULL "
                "AND kv.expires <= ?", (key, now + ttl_s, now))
            return cur.rowcount == 1

        return await self._run(q)

    async def _counter(self, key: str, amount: int, ttl_s: float, sliding: bool) -> int:
        # One statement, so it is atomic across processes: reset when expired, else add. A sliding
        # TTL is renewed by every increment; a fixed window keeps the expiry of its first one.
        def q(c: sqlite3.Connection) -> int:
            now = time.time()
            row = c.execute(
                "INSERT INTO kv (key, value, expires) VALUES (:key, :n, :exp) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN kv.expires <= :now THEN :n ELSE CAST(kv.value AS INTEGER) + :n END, "
                "expires = CASE WHEN :sliding OR kv.expires <= :now THEN :exp ELSE kv.expires END "
                "RETURNING value",
                {"key": key, "n": amount, "exp": now + ttl_s, "now": now, "sliding": sliding},
            ).fetchone()
            return int(row[0])

        return await self._run(q)

    async def hit_count(self, key: str, ttl_s: float) -> int:
        return await self._counter(key, 1, ttl_s, sliding=True)

    async def incr_window(self, key: str, amount: int, window_s: float) -> int:
        return await self._counter(key, amount, window_s, sliding=False)

    # ------------------------------------------------------------------------------- lists, LRU

    async def list_push(self, key: str, item: bytes, cap: int, ttl_s: float) -> None:
        def q(c: sqlite3.Connection) -> None:
            expires = time.time() + ttl_s
            # Each item carries its own expiry (Redis refreshes the whole list's; the difference only
            # shows for lists idle longer than the TTL). The trim walks the (key, seq) index.
            c.execute("INSERT INTO lists (key, item, expires) VALUES (?, ?, ?)", (key, item, expires))
            c.execute(
                "DELETE FROM lists WHERE key = ? AND seq <= "
                "(SELECT seq FROM lists WHERE key = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (key, key, cap),
            )

        await self._run(q)

    async def put_entries(self, items: list[EntryWrite]) -> None:
        def q(c: sqlite3.Connection) -> None:
            now = time.time()
            c.execute("BEGIN IMMEDIATE")
            try:
                trims: dict[str, int] = {}
                for it in items:
                    expires = now + it.ttl_s
                    kv = [(*it.entry, expires)] + ([(*it.pointer, expires)] if it.pointer else [])
                    c.executemany("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)", kv)
                    if it.recent is not None:
                        key, item, cap = it.recent
                        c.execute("INSERT INTO lists (key, item, expires) VALUES (?, ?, ?)", (key, item, expires))
                        trims[key] = cap
                    c.execute("INSERT OR REPLACE INTO lru (grp, member, atime) VALUES (?, ?, ?)", (*it.lru, now))
                for key, cap in trims.items():  # once per list, not once per item
                    c.execute("DELETE FROM lists WHERE key = ? AND seq <= "
                              "(SELECT seq FROM lists WHERE key = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                              (key, key, cap))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._maybe_purge(c)

        if items:
            await self._run(q)

    async def list_range(self, key: str, count: int) -> list[bytes]:
        def q(c: sqlite3.Connection) -> list[bytes]:
            rows = c.execute(
                "SELECT item FROM lists WHERE key = ? AND expires > ? ORDER BY seq DESC LIMIT ?",
                (key, time.time(), count),
            ).fetchall()
            return [bytes(r[0]) for r in rows]

        return await self._run(q)

    async def lru_touch(self, group: str, member: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO lru (grp, member, atime) VALUES (?, ?, ?)",
                (group, member, time.time()),
            )

        await self._run(q)

    async def lru_trim(self, group: str, max_members: int) -> list[str]:
        def q(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "DELETE FROM lru WHERE grp = ? AND member IN (SELECT member FROM lru WHERE grp = ? "
                "ORDER BY atime LIMIT max(0, (SELECT COUNT(*) FROM lru WHERE grp = ?) - ?)) RETURNING member",
                (group, group, group, max_members),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(q)

    # ------------------------------------------------------------------------------- vectors

    async def vec_add(self, partition: str, member: str, vec: bytes, ttl_s: float) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                    (partition, member, vec, time.time() + ttl_s),
                )
                c.execute(
                    "INSERT INTO vlog (partition, member, vec) VALUES (?, ?, ?)", (partition, member, vec)
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(q)

    async def vec_remove(self, partition: str, members: list[str]) -> None:
        def q(c: sqlite3.Connection) -> None:
            rows = [(partition, m) for m in members]
            c.executemany("DELETE FROM vectors WHERE partition = ? AND member = ?", rows)
            c.executemany("INSERT INTO vlog (partition, member, vec) VALUES (?, ?, NULL)", rows)

        if members:
            await self._run(q)

    async def vec_load(self, partition: str) -> dict[str, bytes]:
        def q(c: sqlite3.Connection) -> dict[str, bytes]:
            rows = c.execute(
                "SELECT member, vec FROM vectors WHERE partition = ? AND expires > ?",
                (partition, time.time()),
            ).fetchall()
            return {m: bytes(v) for m, v in rows}

        return await self._run(q)

    async def vec_cursor(self) -> str:
        def q(c: sqlite3.Connection) -> str:
            return str(c.execute("SELECT COALESCE(MAX(seq), 0) FROM vlog").fetchone()[0])

        return await self._run(q)

    async def vec_changes(self, cursor: str, limit: int = 1000) -> tuple[str, list[VecChange]] | None:
        def q(c: sqlite3.Connection) -> tuple[str, list[VecChange]] | None:
            since = int(cursor)
            oldest = c.execute("SELECT MIN(seq) FROM vlog").fetchone()[0]
            if oldest is not None and since > 0 and oldest > since + 1:
                return None  # rows after our cursor were purged before we saw them
            rows = c.execute(
                "SELECT seq, partition, member, vec FROM vlog WHERE seq > ? ORDER BY seq LIMIT ?",
                (since, limit),
            ).fetchall()
            changes: list[VecChange] = [(p, m, None if v is None else bytes(v)) for _, p, m, v in rows]
            return (str(rows[-1][0]) if rows else cursor), changes

        return await self._run(q)

    async def clear(self, prefix: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            like = prefix.replace("%", r"\%").replace("_", r"\_") + "%"
            for table, col in (("kv", "key"), ("lists", "key"), ("lru", "grp")):
                c.execute(f"DELETE FROM {table} WHERE {col} LIKE ? ESCAPE '\\'", (like,))
            c.execute("DELETE FROM vectors")
            c.execute("INSERT INTO vlog (partition, member, vec) VALUES (?, ?, NULL)", (CLEAR, CLEAR))

        await self._run(q)

    async def map_set(self, key: str, field: str, value: bytes) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO maps (key, field, value) VALUES (?, ?, ?)", (key, field, value))

        await self._run(q)

    async def map_all(self, key: str) -> dict[str, bytes]:
        def q(c: sqlite3.Connection) -> dict[str, bytes]:
            return {f: bytes(v) for f, v in c.execute("SELECT field, value FROM maps WHERE key = ?", (key,))}

        return await self._run(q)

    async def count(self, prefix: str) -> int:
        def q(c: sqlite3.Connection) -> int:
            # A range on the primary key instead of LIKE: the index is walked, not the table.
            row = c.execute("SELECT COUNT(*) FROM kv WHERE key >= ? AND key < ? AND (expires IS NULL OR expires > ?)",
                            (prefix, prefix + "\U0010ffff", time.time())).fetchone()
            return int(row[0])

        return await self._run(q)

    async def memory(self) -> StoreMemory:
        def size() -> int:
            return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal", self.path + "-shm")
                       if os.path.exists(p))

        n = await self._b.run(lambda: asyncio.get_running_loop().run_in_executor(self._pool, size))
        return StoreMemory("embedded", n, "SQLite file size (database, WAL and shared-memory files)")

    async def ping(self) -> bool:
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
            return True
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
