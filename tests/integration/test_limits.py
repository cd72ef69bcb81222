"""Window and budget counters on a real Redis and on the embedded SQLite store (same tests for both)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.governance.counters import Cap, Counters, Window, open_counters
from gateway.store import StoreUnavailable, open_store
from gateway.store.redis import RedisStore


@pytest.fixture(params=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "redis":
        # A generous op timeout: a stall of a loaded CI machine must not look like a store outage.
        s: Any = RedisStore(request.getfixturevalue("redis_url"), max_connections=64, op_timeout_s=5.0,
                            connect_timeout_s=5.0)
    else:
        s = open_store(None, str(tmp_path / "store.db"))
    yield s
    await s.close()


@pytest.fixture
async def counters(store: Any) -> Counters:
    return await open_counters(store, 60)


async def test_rpm_admits_exactly_n_under_concurrency(counters: Counters) -> None:
    results = await asyncio.gather(*(counters.admit([Window("rl:k:r", 50, 1)], []) for _ in range(80)))
    assert sum(v.ok for v in results) == 50
    refused = [v for v in results if not v.ok]
    assert all(v.windows[0].used == 50 for v in refused)
    assert all(1 <= v.windows[0].retry_s <= 60 for v in refused)


async def test_a_refusal_takes_nothing_from_any_window(counters: Counters) -> None:
    # The token window has room, the request window does not: neither may be charged.
    assert (await counters.admit([Window("r", 1, 1), Window("t", 1000, 10)], [])).ok
    v = await counters.admit([Window("r", 1, 1), Window("t", 1000, 10)], [])
    assert not v.ok and v.windows[1].used == 10 and v.windows[1].retry_s == 0
    v = await counters.admit([Window("t", 1000, 0)], [])
    assert v.windows[0].used == 10


async def test_too_large_is_never_admitted(counters: Counters) -> None:
    v = await counters.admit([Window("t", 100, 101)], [])
    assert not v.ok and v.windows[0].retry_s == -1


async def test_tokens_reserved_then_corrected(counters: Counters) -> None:
    v = await counters.admit([Window("t", 100, 60)], [])
    assert v.ok
    assert not (await counters.admit([Window("t", 100, 60)], [])).ok
    await counters.adjust([(v.now, "t", -50)], [])  # the answer used 10, not 60
    v2 = await counters.admit([Window("t", 100, 60)], [])
    assert v2.ok and v2.windows[0].used == 10


async def test_one_adjust_corrects_many_requests(counters: Counters) -> None:
    a = await counters.admit([Window("ta", 1000, 300), Window("tb", 1000, 100)], [Cap("bud:m", 10_000, 900, 3600)])
    b = await counters.admit([Window("ta", 1000, 300)], [])
    assert a.ok and b.ok
    # Two requests' corrections, a bucket that already slid out of the window, and a budget: one call.
    await counters.adjust([(a.now, "ta", -250), (b.now, "ta", -200), (a.now, "tb", -100), (a.now - 600, "ta", 7)],
                          [("bud:m", -400, 3600)])
    v = await counters.admit([Window("ta", 1000, 0), Window("tb", 1000, 0)], [Cap("bud:m", 10_000, 0, 3600)])
    assert [w.used for w in v.windows] == [600 - 450 + 7, 0] and v.spent == [500]


async def test_window_slides(store: Any) -> None:
    counters = await open_counters(store, 2)
    assert (await counters.admit([Window("short", 1, 1)], [])).ok
    refused = await counters.admit([Window("short", 1, 1)], [])
    assert not refused.ok and refused.windows[0].retry_s in (1, 2)
    await asyncio.sleep(2.05)
    assert (await counters.admit([Window("short", 1, 1)], [])).ok


async def test_budget_caps_and_read(counters: Counters) -> None:
    cap = Cap("bud:k", 1_000, 400, 3600)
    assert (await counters.admit([], [cap])).ok
    assert (await counters.admit([], [cap])).ok
    v = await counters.admit([], [cap])
    assert not v.ok and v.spent == [800]
    await counters.adjust([], [("bud:k", -500, 3600)])
    assert await counters.read(["bud:k", "bud:none"]) == [300, 0]
    assert (await counters.admit([], [cap])).ok


def _embedded_worker(path: str, n: int, out: Any) -> None:
    async def go() -> int:
        store = open_store(None, path)
        counters = await open_counters(store, 60)
        results = await asyncio.gather(*(counters.admit([Window("shared:r", 120, 1)], []) for _ in range(n)))
        await store.close()
        return sum(v.ok for v in results)

    out.put(asyncio.run(go()))


def test_embedded_store_holds_the_limit_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_embedded_worker, args=(path, 60, out)) for _ in range(4)]
    for p in procs:
        p.start()
    admitted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(admitted) == 120  # 240 attempts from 4 processes, one limit


async def test_redis_outage_raises_store_unavailable_fast(redis_server: Any, redis_url: str) -> None:
    store = RedisStore(redis_url)
    counters = await open_counters(store, 60)
    assert (await counters.admit([Window("o", 5, 1)], [])).ok
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await counters.admit([Window("o", 5, 1)], [])
        t = time.perf_counter()
        with pytest.raises(StoreUnavailable):  # the breaker is open: no connect attempt
            await counters.admit([Window("o", 5, 1)], [])
        assert time.perf_counter() - t < 0.05
    finally:
        redis_server.start()
        await store.close()


async def test_scripts_survive_a_script_flush(redis_url: str) -> None:
    import redis.asyncio as aioredis

    store = RedisStore(redis_url)
    counters = await open_counters(store, 60)
    assert (await counters.admit([Window("f", 5, 1)], [])).ok
    admin = aioredis.Redis.from_url(redis_url)
    await admin.script_flush()
    await admin.aclose()
    assert (await counters.admit([Window("f", 5, 1)], [])).ok  # EVALSHA misses, the script is reloaded
    await store.close()
