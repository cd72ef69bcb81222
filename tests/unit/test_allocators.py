"""The allocator settings the gateway starts with, and the trims that hand memory back."""

from __future__ import annotations

import asyncio

from gateway import server
from gateway.worker.memtrim import M_TRIM_THRESHOLD, Trimmer, thresholds


def test_an_operators_jemalloc_setting_wins() -> None:
    env = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000"}
    server.jemalloc_conf(env)
    assert env == {"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000"}


def test_jemalloc_sends_body_sized_allocations_to_its_eagerly_purged_arena() -> None:
    # Its background purger does not run in forked workers: a decay delay keeps pages until traffic.
    env: dict[str, str] = {}
    server.jemalloc_conf(env)
    assert env["_RJEM_MALLOC_CONF"] == "oversize_threshold:262144"


def test_glibc_trim_threshold_fixed_at_1_mb_unless_the_operator_set_glibc_own() -> None:
    assert thresholds({}) == thresholds({"PYTHONMALLOC": "malloc"}) == {M_TRIM_THRESHOLD: 1 << 20}
    assert thresholds({"MALLOC_MMAP_THRESHOLD_": "65536"}) == {}
    assert thresholds({"MALLOC_TRIM_THRESHOLD_": "0"}) == {}


async def test_a_large_request_schedules_one_trim_a_small_one_none() -> None:
    trimmer = Trimmer(delay_s=0.01)
    ran = asyncio.Event()
    calls: list[int] = []

    def fake() -> None:
        calls.append(1)
        ran.set()

    trimmer._trim = fake
    trimmer.after(Trimmer.LARGE_BODY_BYTES - 1)
    assert not trimmer._pending
    trimmer.after(Trimmer.LARGE_BODY_BYTES)
    trimmer.after(20 * 1024 * 1024)  # while one is pending: no second
    await asyncio.wait_for(ran.wait(), 5)
    assert calls == [1] and trimmer.trims == 1 and not trimmer._pending
    ran.clear()
    trimmer.after(Trimmer.LARGE_BODY_BYTES)  # after it ran, the next large request schedules again
    await asyncio.wait_for(ran.wait(), 5)
    assert trimmer.trims == 2


def test_the_trim_threshold_covers_bodies_of_many_small_messages() -> None:
    # 20,000 short messages (the body that fragmented the heap most) are ~600 KB.
    body = ('{"model": "m", "messages": [' + ",".join(['{"role": "user", "content": "hi"}'] * 20_000) + "]}")
    assert len(body) >= Trimmer.LARGE_BODY_BYTES


async def test_the_periodic_trim_runs_only_after_requests_came_in() -> None:
    trimmer = Trimmer(every_s=0.01)
    ticks: list[bool] = []
    ran = asyncio.Event()

    def fake() -> None:
        ran.set()

    trimmer._trim = fake
    tick = trimmer._tick

    def counting(loop: asyncio.AbstractEventLoop) -> None:
        ticks.append(trimmer._busy)
        tick(loop)
        if len(ticks) == 3:  # idle so far: no trim; now a small request finishes
            trimmer.after(100)

    trimmer._tick = counting  # type: ignore[method-assign]
    trimmer.start(asyncio.get_running_loop())
    try:
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        trimmer.stop()
    assert ticks[:3] == [False, False, False] and ticks[-1] is True
    assert trimmer.trims == 1 and not trimmer._busy
