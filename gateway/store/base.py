"""What every store is: the `Store` protocol, its write and change types, and `StoreBreaker`, the one
error boundary every store (and every optional sink with a remote backend) runs its calls through.

Errors: every Redis, SQLite, Postgres or socket exception is translated in exactly one place,
`StoreBreaker.run`, into `StoreUnavailable`. Callers on the request path catch that one type and carry on
without the store. The breaker also makes an outage cheap: after a failure, calls fail fast (no
connect attempt) until a back-off elapses, then one call probes; the first success closes it. An
outage is logged once when it starts and once when it ends; `degraded` feeds /readyz.

    StoreUnavailable
      <- redis.RedisError (ConnectionError, TimeoutError, ResponseError, ...), OSError, TimeoutError
      <- sqlite3.Error, OSError

Vectors: plain Redis has no vector search, so each partition's vectors live in a hash
(member -> float32 bytes) and every add/remove/clear is appended to a change log (a stream on Redis,
a table on SQLite). Workers keep an in-memory index (`cache.semantic.VectorIndex`): load a partition
once, then follow the log from a cursor. `vec_changes` returns None when the cursor fell off the log
(trimmed): the caller must drop its mirror and reload.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol, TypeVar

import structlog

log = structlog.get_logger("gateway.store")
T = TypeVar("T")

# (partition, member, float32 bytes | None for a removal); partition "*" means "everything cleared".
VecChange = tuple[str, str, bytes | None]
VLOG_MAX = 100_000  # log entries kept; a worker further behind than this reloads its mirror
CLEAR = "*"


class EntryWrite(NamedTuple):
    entry: tuple[str, bytes]  # key, value
    pointer: tuple[str, bytes] | None  # intent pointer key -> exact key
    recent: tuple[str, bytes, int] | None  # recent-list key, item, cap
    lru: tuple[str, str]  # group, member
    ttl_s: float


class StoreMemory(NamedTuple):
    backend: str  # "redis" or "embedded"
    bytes: int  # Redis used_memory (summed over a Cluster's masters), or the SQLite files' size
    detail: str  # where the figure comes from


class StoreUnavailable(Exception):
    """The store can't be reached or failed; the caller proceeds without it."""


class Store(Protocol):
    @property
    def degraded(self) -> bool: ...  # True during an outage: /readyz reports it

    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def claim(self, key: str, ttl_s: float) -> bool:
        """Set `key` only if it is absent (or expired): True for the one caller that got it."""
        ...
    async def hit_count(self, key: str, ttl_s: float) -> int: ...
    async def incr_window(self, key: str, amount: int, window_s: float) -> int: ...
    async def list_push(self, key: str, item: bytes, cap: int, ttl_s: float) -> None: ...
    async def put_entries(self, items: list[EntryWrite]) -> None:
        """Cache entries with their intent pointers, recent-list items and LRU marks, in one round
        trip (one transaction on the embedded store)."""
        ...
    async def list_range(self, key: str, count: int) -> list[bytes]: ...
    async def lru_touch(self, group: str, member: str) -> None: ...
    async def lru_trim(self, group: str, max_members: int) -> list[str]: ...
    async def vec_add(self, partition: str, member: str, vec: bytes, ttl_s: float) -> None: ...
    async def vec_remove(self, partition: str, members: list[str]) -> None: ...
    async def vec_load(self, partition: str) -> dict[str, bytes]: ...
    async def vec_cursor(self) -> str: ...
    async def vec_changes(self, cursor: str, limit: int = 1000) -> tuple[str, list[VecChange]] | None: ...
    async def clear(self, prefix: str) -> None: ...
    async def map_set(self, key: str, field: str, value: bytes) -> None:
        """Set one field of a small map (a Redis hash): atomic per field, so concurrent writers of
        different fields never lose each other's write."""
        ...
    async def map_all(self, key: str) -> dict[str, bytes]: ...
    async def count(self, prefix: str) -> int:
        """Live keys under `prefix` (a scan: admin calls only, never the request path)."""
        ...
    async def memory(self) -> StoreMemory: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class StoreBreaker:
    """The one error boundary: foreign exceptions in, StoreUnavailable out; fail fast during an outage."""

    def __init__(self, backend: str, errors: tuple[type[BaseException], ...],
                 before_probe: Callable[[], Awaitable[object]] | None = None) -> None:
        self.backend = backend
        self.errors = errors
        self.degraded = False
        self.outages = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        # Run once after each back-off, before the calls that probe (a Cluster client re-reads its
        # slot map there: the failed master's replica may own its slots by now).
        self._before_probe = before_probe
        self._prepared_for = -1.0

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self.degraded:
            if time.monotonic() < self._retry_at:
                raise StoreUnavailable(f"{self.backend} store unavailable (backing off)")
            if self._before_probe is not None and self._prepared_for != self._retry_at:
                self._prepared_for = self._retry_at
                await self._call(self._before_probe)
        result = await self._call(fn)
        if self.degraded:
            self.degraded = False
            self._backoff = 0.0
            log.info("store recovered", backend=self.backend)
        return result

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except self.errors as exc:
            self._trip(exc)
            raise StoreUnavailable(f"{self.backend}: {exc!r}") from exc

    def _trip(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            self.outages += 1
            log.warning("store unavailable, bypassing it", backend=self.backend, error=repr(exc))
        # 0.25 s, 0.5 s, then every second: a restarted Redis is back in use within a second or so
        # (the fault suite holds cache and limits to 2 s), at one failed call a second while it is away.
        self._backoff = min(1.0, self._backoff * 2 or 0.25)
        self._retry_at = time.monotonic() + self._backoff
