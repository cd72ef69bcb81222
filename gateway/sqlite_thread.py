"""One SQLite file used from a single worker thread, behind a circuit breaker (audit log, archive).

Each call runs `fn(connection)` on that thread, so the event loop never blocks on disk; sqlite3
releases the GIL while it works. Errors become StoreUnavailable at the breaker (gateway.cache.store).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.cache.store import _Breaker

T = TypeVar("T")


class SqliteThread:
    def __init__(self, path: str, name: str, schema: str, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._busy_s = busy_timeout_s
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        conn = self._connect()  # start-up may block: create the schema now
        conn.executescript(schema)
        conn.close()
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._b = _Breaker(f"sqlite-{name}", (sqlite3.Error, OSError))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_s, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

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
