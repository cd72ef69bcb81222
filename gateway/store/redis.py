"""The Redis store (standalone, Sentinel, Cluster): what pods share. Every call goes through `StoreBreaker`.

On a Cluster every multi-key command stays inside one hash slot: the cache's keys carry the
partition as their hash tag (cache/keys.py), the vector hash of a partition too (`gw:v:{<partition>}`),
and the limit counters carry the key's or team's tag (governance/limits.py). Pipelines that span slots
(a group commit of many partitions) are split by the client into one round trip per master, in
parallel. The vector change log is sharded (`log_shards` streams whose tags spread over the slot
range, so each master holds some); a partition's changes always go to the same shard, so their order
holds, and every worker follows every shard with a per-shard cursor. No KEYS or SCAN outside `clear` and
`count` (admin calls).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from gateway.store.base import CLEAR, VLOG_MAX, EntryWrite, StoreBreaker, StoreMemory, StoreUnavailable, VecChange
from gateway.store.redis_url import redis_client

log = structlog.get_logger(__name__)
T = TypeVar("T")
CLUSTER_LOG_SHARDS = 8  # vector-log streams on a Cluster: a few per master for 3-8 masters


def spread_tags(name: str, n: int) -> list[str]:
    """`n` hash tags whose slots fall in `n` equal bands of the slot range, so that a cluster whose
    masters own equal slot ranges (what `redis-cli --cluster create` makes) holds n/masters each."""
    band = REDIS_CLUSTER_HASH_SLOTS // n
    tags = []
    for i in range(n):
        j = 0
        while min(n - 1, key_slot(f"{name}{i}.{j}".encode()) // band) != i:
            j += 1
        tags.append(f"{name}{i}.{j}")
    return tags


def vec_key(partition: str) -> str:
    return f"{RedisStore.VEC_PREFIX}{{{partition}}}"


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
        log_shards: int | None = None,
    ) -> None:
        self._conn = redis_client(url, max_connections=max_connections, connect_s=connect_timeout_s,
                                  op_s=op_timeout_s)
        self._r = self._conn.client
        self.cluster = self._conn.cluster
        shards = log_shards or (CLUSTER_LOG_SHARDS if self.cluster else 1)
        # One stream keeps the standalone layout of earlier versions; shards only where they spread.
        self._vlogs = [self.VLOG] if shards == 1 else [f"{self.VLOG}:{{{t}}}" for t in spread_tags("vlog", shards)]
        self._b = StoreBreaker("redis", self._conn.errors, self._conn.before_probe)
        # redis-py's asyncio cluster client fails a command at once (MaxConnectionsError) when a
        # node's pool is used up, where the standalone pool waits for a connection: under a burst
        # that tripped the breaker (seen at 128 connections on one worker). Bound the calls in
        # flight instead (each holds at most one connection per node), waiting up to the op timeout.
        self._slots = asyncio.Semaphore(max_connections) if self.cluster else None
        self._wait_s = op_timeout_s

    @property
    def degraded(self) -> bool:
        return self._b.degraded

    @property
    def client(self) -> Any:
        """The redis.asyncio client, for subsystems with their own scripts (governance limits)."""
        return self._r

    async def guarded(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` behind this store's circuit breaker (errors become StoreUnavailable)."""
        return await self._run(fn)

    def _run(self, fn: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        slots = self._slots
        if slots is None:
            return self._b.run(fn)

        async def bounded() -> T:
            async with asyncio.timeout(self._wait_s):
                await slots.acquire()
            try:
                return await fn()
            finally:
                slots.release()

        return self._b.run(bounded)

    def _vlog_of(self, partition: str) -> str:
        logs = self._vlogs
        return logs[0] if len(logs) == 1 else logs[zlib.crc32(partition.encode()) % len(logs)]

    async def get(self, key: str) -> bytes | None:
        return await self._run(lambda: self._r.get(key))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self.cluster:  # one MGET per slot (one for the cache's lookup: its keys share a tag)
            return await self._run(lambda: self._r.mget_nonatomic(keys))
        return await self._run(lambda: self._r.mget(keys))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        px = max(1, int(ttl_s * 1000)) if ttl_s else None
        await self._run(lambda: self._r.set(key, value, px=px))

    async def delete(self, *keys: str) -> None:
        if keys:  # the cluster client splits a DEL across slots
            await self._run(lambda: self._r.delete(*keys))

    async def claim(self, key: str, ttl_s: float) -> bool:
        px = max(1, int(ttl_s * 1000))
        return bool(await self._run(lambda: self._r.set(key, b"1", px=px, nx=True)))

    async def _pipe(self, build: Callable[[Any], object]) -> list[Any]:
        async def go() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            build(pipe)
            return await pipe.execute()

        return await self._run(go)

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
        return await self._run(lambda: self._r.lrange(key, 0, count - 1))

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
        await self._run(lambda: self._r.zadd(group, {member: time.time()}))

    async def lru_trim(self, group: str, max_members: int) -> list[str]:
        size = int(await self._run(lambda: self._r.zcard(group)))
        if size <= max_members:
            return []
        popped = await self._run(lambda: self._r.zpopmin(group, size - max_members))
        return [m.decode() for m, _ in popped]

    async def vec_add(self, partition: str, member: str, vec: bytes, ttl_s: float) -> None:
        key = vec_key(partition)
        await self._pipe(
            lambda p: (
                p.hset(key, member, vec),
                p.pexpire(key, int(ttl_s * 1000)),
                p.xadd(self._vlog_of(partition), {"p": partition, "m": member, "v": vec}, maxlen=VLOG_MAX,
                       approximate=True),
            )
        )

    async def vec_remove(self, partition: str, members: list[str]) -> None:
        if not members:
            return

        def build(p: Any) -> object:
            p.hdel(vec_key(partition), *members)
            for m in members:
                p.xadd(self._vlog_of(partition), {"p": partition, "m": m, "v": b""}, maxlen=VLOG_MAX,
                       approximate=True)
            return None

        await self._pipe(build)

    async def vec_load(self, partition: str) -> dict[str, bytes]:
        raw = await self._run(lambda: self._r.hgetall(vec_key(partition)))
        return {k.decode(): v for k, v in raw.items()}

    async def vec_cursor(self) -> str:
        """The newest id of every log shard, comma-separated (one plain stream id when unsharded)."""
        lasts = await self._pipe(lambda p: [p.xrevrange(log, count=1) for log in self._vlogs])
        return ",".join(last[0][0].decode() if last else "0-0" for last in lasts)

    async def vec_changes(self, cursor: str, limit: int = 1000) -> tuple[str, list[VecChange]] | None:
        cursors = cursor.split(",")
        if len(cursors) != len(self._vlogs):
            return None  # a cursor from another shard layout: reload
        # Inclusive reads: the cursor's own entry first proves nothing after it was trimmed unseen,
        # at one command per shard per sync.
        res = await self._pipe(lambda p: [p.xrange(log, min=c, count=limit + 1)
                                          for log, c in zip(self._vlogs, cursors, strict=True)])
        out_cursors, changes = [], []
        for c, entries in zip(cursors, res, strict=True):
            if entries and entries[0][0].decode() == c:
                entries = entries[1:]
            elif c != "0-0" and entries:
                return None  # the oldest entry kept is newer than our cursor: some were trimmed unseen
            elif c != "0-0" and not entries:
                # The cursor's entry is gone and nothing follows: the shard was trimmed past it or
                # deleted; only a reload is safe.
                return None
            changes += [(f[b"p"].decode(), f[b"m"].decode(), f[b"v"] or None) for _, f in entries]
            out_cursors.append(entries[-1][0].decode() if entries else c)
        return ",".join(out_cursors), changes

    async def clear(self, prefix: str) -> None:
        async def go() -> None:
            # SCAN visits every master on a Cluster (redis-py's scan_iter); never on the request path.
            for pattern in (prefix + "*", self.VEC_PREFIX + "*"):
                batch: list[Any] = []
                async for key in self._r.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await self._r.unlink(*batch)
                        batch = []
                if batch:
                    await self._r.unlink(*batch)
            event = {"p": CLEAR, "m": CLEAR, "v": b""}
            pipe = self._r.pipeline(transaction=False)
            for vlog in self._vlogs:  # every shard: each worker applies the clear in order with it
                pipe.xadd(vlog, event, maxlen=VLOG_MAX, approximate=True)
            await pipe.execute()

        await self._run(go)

    async def map_set(self, key: str, field: str, value: bytes) -> None:
        await self._b.run(lambda: self._r.hset(key, field, value))

    async def map_all(self, key: str) -> dict[str, bytes]:
        raw = await self._b.run(lambda: self._r.hgetall(key))
        return {k.decode(): v for k, v in raw.items()}

    async def count(self, prefix: str) -> int:
        async def go() -> int:
            n = 0
            async for _ in self._r.scan_iter(match=prefix + "*", count=1000):  # every master on a Cluster
                n += 1
            return n

        return await self._b.run(go)

    async def memory(self) -> StoreMemory:
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            raw = await self._b.run(lambda: self._r.info("memory", target_nodes=RedisCluster.PRIMARIES))
            infos = list(raw.values()) if "used_memory" not in raw else [raw]
            return StoreMemory("redis", sum(int(i.get("used_memory", 0)) for i in infos),
                               f"INFO used_memory, summed over {len(infos)} masters")
        info = await self._b.run(lambda: self._r.info("memory"))
        return StoreMemory("redis", int(info.get("used_memory", 0)), "INFO used_memory")

    async def ping(self) -> bool:
        try:
            return bool(await self._run(lambda: self._r.ping()))
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await self._conn.close()
