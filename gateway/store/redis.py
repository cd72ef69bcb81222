"""The Redis store (standalone, Sentinel): what pods share. Every call goes through `Breaker`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.store.base import CLEAR, VLOG_MAX, Breaker, EntryWrite, StoreUnavailable, VecChange

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _redis_client(url: str, max_connections: int, connect_s: float, op_s: float) -> tuple[Any, Any, list[Any]]:
    """The client for a redis:// or rediss:// URL, or for a Sentinel-managed master given as
    redis+sentinel://host1:26379,host2:26379/<service>[/<db>] (rediss+sentinel:// for TLS).

    Any: redis-py types every command as "Awaitable[T] | T" (sync and async share stubs), which
    says nothing here; each RedisStore method states its own result type instead.
    """
    common: dict[str, Any] = {"socket_connect_timeout": connect_s, "socket_timeout": op_s,
                              "retry": Retry(NoBackoff(), 0), "protocol": 2}
    parts = urlsplit(url)
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        from redis.asyncio.sentinel import Sentinel

        hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]) if ":" in h else 26379)
                 for h in parts.netloc.rsplit("@", 1)[-1].split(",") if h]
        path = [p for p in parts.path.split("/") if p]
        if not hosts or not path:
            raise ValueError("a Sentinel URL needs hosts and a service: redis+sentinel://h1:26379,h2/mymaster/0")
        db = int(path[1]) if len(path) > 1 else 0
        auth = {"password": parts.password, "username": parts.username} if parts.password else {}
        ssl = {"ssl": True} if parts.scheme.startswith("rediss") else {}
        sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": op_s}, **common, **auth, **ssl)
        client = sentinel.master_for(path[0], db=db, max_connections=max_connections)
        return client.connection_pool, client, list(sentinel.sentinels)
    # No retries inside redis-py: a retry loop would multiply the timeout on the request path;
    # the breaker decides when to try again. hiredis is picked up automatically when installed.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=op_s,
                                                    **common)
    return pool, aioredis.Redis(connection_pool=pool), []


class RedisStore:
    VEC_PREFIX = "gw:v:"
    VLOG = "gw:vlog"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 64,
        connect_timeout_s: float = 0.25,
        op_timeout_s: float = 0.5,
    ) -> None:
        # No retries inside redis-py: a retry loop would multiply the timeout on the request path;
        # the breaker decides when to try again. hiredis is picked up automatically when installed.
        self._pool, self._r, self._sentinels = _redis_client(url, max_connections, connect_timeout_s,
                                                             op_timeout_s)
        self._b = Breaker("redis", (RedisError, OSError, TimeoutError))

    @property
    def degraded(self) -> bool:
        return self._b.degraded

    @property
    def client(self) -> Any:
        """The redis.asyncio client, for subsystems with their own scripts (governance limits)."""
        return self._r

    async def guarded(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` behind this store's circuit breaker (errors become StoreUnavailable)."""
        return await self._b.run(fn)

    async def get(self, key: str) -> bytes | None:
        return await self._b.run(lambda: self._r.get(key))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        return await self._b.run(lambda: self._r.mget(keys))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        px = max(1, int(ttl_s * 1000)) if ttl_s else None
        await self._b.run(lambda: self._r.set(key, value, px=px))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._b.run(lambda: self._r.delete(*keys))

    async def claim(self, key: str, ttl_s: float) -> bool:
        px = max(1, int(ttl_s * 1000))
        return bool(await self._b.run(lambda: self._r.set(key, b"1", px=px, nx=True)))

    async def _pipe(self, build: Callable[[Any], object]) -> list[Any]:
        async def go() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            build(pipe)
            return await pipe.execute()

        return await self._b.run(go)

    async def hit_count(self, key: str, ttl_s: float) -> int:
        # The TTL slides: the count survives as long as the key is seen at least once per TTL,
        # like a provider's prompt cache, which refreshes on every hit.
        res = await self._pipe(lambda p: (p.incr(key), p.pexpire(key, int(ttl_s * 1000))))
        return int(res[0])

    async def incr_window(self, key: str, amount: int, window_s: float) -> int:
        # Fixed window: the expiry is set by the first increment only (EXPIRE NX, Redis >= 7).
        ms = int(window_s * 1000)
        res = await self._pipe(lambda p: (p.incrby(key, amount), p.pexpire(key, ms, nx=True)))
        return int(res[0])

    async def list_push(self, key: str, item: bytes, cap: int, ttl_s: float) -> None:
        await self._pipe(
            lambda p: (p.lpush(key, item), p.ltrim(key, 0, cap - 1), p.pexpire(key, int(ttl_s * 1000)))
        )

    async def list_range(self, key: str, count: int) -> list[bytes]:
        return await self._b.run(lambda: self._r.lrange(key, 0, count - 1))

    async def put_entries(self, items: list[EntryWrite]) -> None:
        def build(p: Any) -> None:
            now = time.time()
            for it in items:
                px = max(1, int(it.ttl_s * 1000))
                p.set(it.entry[0], it.entry[1], px=px)
                if it.pointer is not None:
                    p.set(it.pointer[0], it.pointer[1], px=px)
                if it.recent is not None:
                    p.lpush(it.recent[0], it.recent[1])
                    p.ltrim(it.recent[0], 0, it.recent[2] - 1)
                    p.pexpire(it.recent[0], px)
                p.zadd(it.lru[0], {it.lru[1]: now})

        if items:
            await self._pipe(build)

    async def lru_touch(self, group: str, member: str) -> None:
        await self._b.run(lambda: self._r.zadd(group, {member: time.time()}))

    async def lru_trim(self, group: str, max_members: int) -> list[str]:
        size = int(await self._b.run(lambda: self._r.zcard(group)))
        if size <= max_members:
            return []
        popped = await self._b.run(lambda: self._r.zpopmin(group, size - max_members))
        return [m.decode() for m, _ in popped]

    async def vec_add(self, partition: str, member: str, vec: bytes, ttl_s: float) -> None:
        key = self.VEC_PREFIX + partition
        await self._pipe(
            lambda p: (
                p.hset(key, member, vec),
                p.pexpire(key, int(ttl_s * 1000)),
                p.xadd(self.VLOG, {"p": partition, "m": member, "v": vec}, maxlen=VLOG_MAX, approximate=True),
            )
        )

    async def vec_remove(self, partition: str, members: list[str]) -> None:
        if not members:
            return

        def build(p: Any) -> object:
            p.hdel(self.VEC_PREFIX + partition, *members)
            for m in members:
                p.xadd(self.VLOG, {"p": partition, "m": m, "v": b""}, maxlen=VLOG_MAX, approximate=True)
            return None

        await self._pipe(build)

    async def vec_load(self, partition: str) -> dict[str, bytes]:
        raw = await self._b.run(lambda: self._r.hgetall(self.VEC_PREFIX + partition))
        return {k.decode(): v for k, v in raw.items()}

    async def vec_cursor(self) -> str:
        last = await self._b.run(lambda: self._r.xrevrange(self.VLOG, count=1))
        return last[0][0].decode() if last else "0-0"

    async def vec_changes(self, cursor: str, limit: int = 1000) -> tuple[str, list[VecChange]] | None:
        res = await self._pipe(
            lambda p: (p.xrange(self.VLOG, min="(" + cursor, count=limit), p.xrange(self.VLOG, count=1))
        )
        entries, first = res
        if cursor != "0-0" and first and _sid(first[0][0].decode()) > _sid(cursor):
            return None  # the oldest entry kept is newer than our cursor: some were trimmed unseen
        changes: list[VecChange] = [(f[b"p"].decode(), f[b"m"].decode(), f[b"v"] or None) for _, f in entries]
        return (entries[-1][0].decode() if entries else cursor), changes

    async def clear(self, prefix: str) -> None:
        async def go() -> None:
            for pattern in (prefix + "*", self.VEC_PREFIX + "*"):
                async for key in self._r.scan_iter(match=pattern, count=1000):
                    await self._r.unlink(key)
            event = {"p": CLEAR, "m": CLEAR, "v": b""}
            await self._r.xadd(self.VLOG, event, maxlen=VLOG_MAX, approximate=True)

        await self._b.run(go)

    async def ping(self) -> bool:
        try:
            return bool(await self._b.run(lambda: self._r.ping()))
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await self._r.aclose()
        await self._pool.disconnect()  # a pool passed in explicitly is not closed by aclose()
        for client in self._sentinels:
            await client.aclose()


def _sid(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
