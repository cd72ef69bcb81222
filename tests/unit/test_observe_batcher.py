"""The audit/archive batcher: bounded, never blocks the caller, drops and counts, flushes on close."""

from __future__ import annotations

import asyncio

from gateway.observe.batcher import Batcher


async def test_batches_by_size_and_by_tick() -> None:
    got: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        got.append(batch)

    b: Batcher[int] = Batcher("t", write, max_queue=100, batch_size=3, interval_s=0.05)
    b.start()
    for i in range(7):
        assert b.put(i)
    await asyncio.sleep(0.15)
    assert [x for batch in got for x in batch] == list(range(7))
    assert all(len(batch) <= 3 for batch in got)
    assert b.written == 7 and b.dropped == 0
    await b.close()


async def test_full_queue_drops_and_counts() -> None:
    async def write(batch: list[int]) -> None: ...

    b: Batcher[int] = Batcher("t", write, max_queue=5, batch_size=100, interval_s=10)
    results = [b.put(i) for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert b.dropped == 3 and len(b.queue) == 5


async def test_failing_or_stalled_sink_drops_without_blocking() -> None:
    calls = 0

    async def broken(batch: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis down")
        await asyncio.sleep(10)  # a stalled sink

    b: Batcher[int] = Batcher("t", broken, max_queue=100, batch_size=2, interval_s=0.01, write_timeout_s=0.05)
    b.start()
    for i in range(4):
        b.put(i)
    await asyncio.sleep(0.3)
    assert b.failures == 2 and b.dropped == 4 and b.written == 0
    await b.close(timeout_s=0.1)


async def test_close_flushes_everything_left() -> None:
    got: list[int] = []

    async def write(batch: list[int]) -> None:
        await asyncio.sleep(0.01)
        got.extend(batch)

    b: Batcher[int] = Batcher("t", write, max_queue=10_000, batch_size=50, interval_s=60)
    b.start()
    for i in range(1000):
        b.put(i)
    await b.close()
    assert got == list(range(1000)) and b.written == 1000 and b.dropped == 0
