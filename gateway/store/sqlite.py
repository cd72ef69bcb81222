"""One SQLite file used from a single worker thread, behind a circuit breaker (audit log, archive).

Each call runs `fn(connection)` on that thread, so the event loop never blocks on disk; sqlite3
releases the GIL while it works. Errors become StoreUnavailable at the breaker (gateway.store.redis).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.store.base import StoreBreaker

T = TypeVar("T")


def _retry_locked(fn: Callable[[], T], within_s: float) -> T:
    # Workers starting together race to switch a new file to WAL and create its tables; SQLite
    # answers "database is locked" there without calling its busy handler, so wait and try again.
    deadline = time.monotonic() + within_s
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect_wal(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in WAL mode (readers beside one writer) that waits for other processes' writes."""
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"), max(5.0, busy_timeout_s))
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(path: str, schema: str, busy_timeout_s: float) -> None:
    conn = connect_wal(path, busy_timeout_s)
    try:
        _retry_locked(lambda: conn.executescript(schema), max(5.0, busy_timeout_s))
    finally:
        conn.close()


class SqliteThread:
    def __init__(self, path: str, name: str, schema: str, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._busy_s = busy_timeout_s
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        create_schema(path, schema, busy_timeout_s)  # start-up may block: create the schema now
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._b = StoreBreaker(f"sqlite-{name}", (sqlite3.Error, OSError))

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path, self._busy_s)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)

        return await self._b.run(lambda: loop.run_in_executor(self._pool, call))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=False)
