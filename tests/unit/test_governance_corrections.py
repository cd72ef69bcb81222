"""Reservation corrections: merged per counter, written in one call per interval, lost (never
raised) when the store is away."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.governance.corrections import Corrections
from gateway.store import StoreUnavailable


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], list[Any]]] = []
        self.down = False

    async def adjust(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.calls.append((sorted(windows), sorted(caps)))

    async def admit(self, *a: Any) -> Any:
        raise NotImplementedError

    async def read(self, keys: list[str]) -> list[int]:
        raise NotImplementedError


async def test_deltas_for_one_counter_add_up_into_one_write() -> None:
    rec = Recorder()
    c = Corrections(rec, interval_s=0.02)
    c.add(100, [("t:a", -40)], [("bud:a", -500, 3600)])
    c.add(100, [("t:a", -10), ("t:team", -10)], [("bud:a", 200, 3600)])
    c.add(101, [("t:a", -5)], [])
    c.add(101, [("t:b", 3), ("t:b", -3)], [])  # nets to zero: nothing to write
    assert rec.calls == []  # nothing is written on the request path
    await asyncio.sleep(0.06)
    assert rec.calls == [([(100, "t:a", -50), (100, "t:team", -10), (101, "t:a", -5)], [("bud:a", -300, 3600)])]
    assert c.batches == 1 and c.pending == 0


async def test_a_full_batch_goes_out_at_once() -> None:
    rec = Recorder()
    c = Corrections(rec, interval_s=60, max_pending=3)
    for i in range(3):
        c.add(100, [(f"t:{i}", -1)], [])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(rec.calls) == 1 and len(rec.calls[0][0]) == 3
    await c.flush()


async def test_an_outage_drops_the_batch_without_raising() -> None:
    rec = Recorder()
    rec.down = True
    c = Corrections(rec, interval_s=60)
    c.add(100, [("t:a", -1)], [])
    await c.flush()
    assert c.dropped == 1 and c.batches == 0
    rec.down = False
    c.add(100, [("t:a", -2)], [])
    await c.flush()
    assert rec.calls == [([(100, "t:a", -2)], [])]  # the lost batch is not replayed: its reservation stood


async def test_flush_with_nothing_pending_writes_nothing() -> None:
    rec = Recorder()
    await Corrections(rec).flush()
    assert rec.calls == []


async def test_now_writes_at_once_with_what_is_pending() -> None:
    rec = Recorder()
    c = Corrections(rec, interval_s=60)
    c.add(100, [("t:a", -1)], [])
    c.add(100, [("t:b", -2)], [], now=True)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.calls == [([(100, "t:a", -1), (100, "t:b", -2)], [])]
