"""The shared store against real backends: Redis (a real server) and the embedded SQLite file."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gateway.store import CLEAR, EntryWrite, Store, StoreUnavailable, open_store
from gateway.store.embedded import EmbeddedStore
from gateway.store.redis import RedisStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        # Generous timeouts: these tests are about what the store does, not how fast a loaded CI
        # machine connects (the default 0.25 s fail-fast window is tested with the breaker).
        s: Store = RedisStore(request.getfixturevalue("redis_url"), connect_timeout_s=5, op_timeout_s=5)
    else:
        s = open_store("", str(tmp_path / "sub" / "store.db"))
    yield s
    await s.close()


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("redis://127.0.0.1:1/0", ""), RedisStore)
    assert isinstance(open_store(None, str(tmp_path / "a.db")), EmbeddedStore)
    assert isinstance(open_store("", str(tmp_path / "b.db")), EmbeddedStore)


async def test_get_set_delete_and_ttl(store: Store) -> None:
    assert await store.get("k") is None
    await store.set("k", b"v")
    await store.set("t", b"short", ttl_s=0.15)
    assert await store.get("k") == b"v"
    assert await store.get_many(["k", "t", "missing"]) == [b"v", b"short", None]
    await asyncio.sleep(0.3)
    assert await store.get("t") is None
    await store.delete("k")
    assert await store.get("k") is None
    assert await store.ping() is True
    assert store.degraded is False


async def test_counters(store: Store) -> None:
    assert [await store.hit_count("h", 0.3) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.2)
    assert await store.hit_count("h", 0.3) == 4  # the TTL slides with each hit
    await asyncio.sleep(0.45)
    assert await store.hit_count("h", 0.3) == 1
    assert await store.incr_window("w", 5, 0.3) == 5
    assert await store.incr_window("w", 2, 0.3) == 7
    await asyncio.sleep(0.45)
    assert await store.incr_window("w", 1, 0.3) == 1  # fixed window: expired, started over


async def test_lists_and_lru(store: Store) -> None:
    for i in range(5):
        await store.list_push("l", f"item{i}".encode(), cap=3, ttl_s=10)
    assert await store.list_range("l", 10) == [b"item4", b"item3", b"item2"]
    assert await store.list_range("l", 2) == [b"item4", b"item3"]
    for m in ("a", "b", "c", "d"):
        await store.lru_touch("g", m)
        await asyncio.sleep(0.002)
    await store.lru_touch("g", "a")  # a is now the most recent
    assert await store.lru_trim("g", 2) == ["b", "c"]
    assert await store.lru_trim("g", 2) == []


async def test_vectors_and_change_log(store: Store) -> None:
    v1 = np.ones(384, dtype=np.float32).tobytes()
    v2 = np.zeros(384, dtype=np.float32).tobytes()
    cursor = await store.vec_cursor()
    await store.vec_add("p", "m1", v1, ttl_s=10)
    await store.vec_add("p", "m2", v2, ttl_s=10)
    await store.vec_add("q", "m3", v1, ttl_s=10)
    assert await store.vec_load("p") == {"m1": v1, "m2": v2}
    await store.vec_remove("p", ["m1"])
    assert await store.vec_load("p") == {"m2": v2}
    got = await store.vec_changes(cursor)
    assert got is not None
    cursor, changes = got
    assert changes == [("p", "m1", v1), ("p", "m2", v2), ("q", "m3", v1), ("p", "m1", None)]
    got = await store.vec_changes(cursor)
    assert got == (cursor, [])
    await store.set("gw:c:x", b"1")
    await store.set("other", b"2")
    await store.clear("gw:c:")
    assert await store.get("gw:c:x") is None
    assert await store.get("other") == b"2"
    assert await store.vec_load("q") == {}
    got = await store.vec_changes(cursor)
    assert got is not None and got[1] == [(CLEAR, CLEAR, None)]


async def test_redis_outage_fails_fast_and_recovers(redis_server, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_url)
    await store.set("k", b"v")
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        assert store.degraded
        t0 = time.perf_counter()
        for _ in range(100):  # the breaker answers without touching the network
            with pytest.raises(StoreUnavailable):
                await store.get("k")
        assert time.perf_counter() - t0 < 0.05
        assert await store.ping() is False
    finally:
        redis_server.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await store.set("k", b"back")
            break
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    assert await store.get("k") == b"back"
    assert store.degraded is False
    await store.close()


async def test_embedded_store_is_shared_by_processes_and_survives_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    script = textwrap.dedent(f"""
        import asyncio, numpy as np
        from gateway.store.embedded import EmbeddedStore
        async def main():
            s = EmbeddedStore({path!r})
            for i in range(50):
                await s.hit_count("count", 60)
            await s.set("from-child", b"hello")
            await s.vec_add("p", "child", np.ones(384, dtype=np.float32).tobytes(), 60)
            await s.close()
        asyncio.run(main())
    """)
    store = EmbeddedStore(path)
    cursor = await store.vec_cursor()
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT) for _ in range(2)
    ]
    for _ in range(50):
        await store.hit_count("count", 60)
    assert [await asyncio.wait_for(c.wait(), 60) for c in children] == [0, 0]
    assert await store.get("from-child") == b"hello"
    assert await store.hit_count("count", 60) == 151  # atomic increments from three processes
    got = await store.vec_changes(cursor)
    assert got is not None and [m for _, m, _ in got[1]] == ["child", "child"]
    await store.close()
    reopened = EmbeddedStore(path)
    assert await reopened.get("from-child") == b"hello"
    await reopened.close()


async def test_put_entries_writes_entry_pointer_recent_and_lru_together(store: Store) -> None:
    for i in range(4):
        await store.put_entries([EntryWrite((f"e{i}", f"entry{i}".encode()), (f"p{i}", f"e{i}".encode()),
                                            ("recent", f"r{i}".encode(), 3), ("lru", f"m{i}"), ttl_s=10)])
        await asyncio.sleep(0.002)
    assert await store.get_many(["e3", "p3", "e0"]) == [b"entry3", b"e3", b"entry0"]
    assert await store.list_range("recent", 10) == [b"r3", b"r2", b"r1"]  # capped at 3
    assert await store.lru_trim("lru", 2) == ["m0", "m1"]
    await store.put_entries([EntryWrite(("short", b"x"), None, None, ("lru", "short"), ttl_s=0.05),
                             EntryWrite(("long", b"y"), None, ("recent", b"r4", 3), ("lru", "long"), ttl_s=10)])
    await asyncio.sleep(0.1)
    assert await store.get("short") is None
    assert await store.get("long") == b"y" and await store.list_range("recent", 10) == [b"r4", b"r3", b"r2"]


def _open_and_write(path: str, start_at: float, i: int) -> str:
    import time as _time

    from gateway.store.embedded import EmbeddedStore

    while _time.time() < start_at:  # every process opens the fresh file at the same moment
        pass
    store = EmbeddedStore(path)

    async def go() -> str:
        await store.set(f"k{i}", b"v")
        await store.close()
        return "ok"

    return asyncio.run(go())


def test_workers_opening_a_new_embedded_store_together(tmp_path: Path) -> None:
    """Regression: workers starting at once raced to switch a new file to WAL ("database is locked")."""
    import concurrent.futures
    import multiprocessing
    import time as _time

    path = str(tmp_path / "fresh" / "store.db")
    start_at = _time.time() + 1.0
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=ctx) as pool:
        results = list(pool.map(_open_and_write, [path] * 6, [start_at] * 6, range(6)))
    assert results == ["ok"] * 6
