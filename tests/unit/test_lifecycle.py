"""Shutdown always ends: a task that swallows its cancellation, or a closer that hangs, is left behind
within a bound; a worker whose master is gone stops itself."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from gateway.worker import lifecycle
from gateway.worker.lifecycle import ParentWatch, bounded, stop_task


async def _stubborn(started: asyncio.Event) -> None:
    """A background loop whose cancellation is lost once (as inside a library call), then sleeps on."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.Event().wait()  # goes on waiting, as the flusher went back to its sleep


async def test_a_task_that_swallows_its_cancellation_does_not_hold_the_caller() -> None:
    started = asyncio.Event()
    task = asyncio.ensure_future(_stubborn(started))
    await started.wait()
    t0 = asyncio.get_running_loop().time()
    await stop_task(task, timeout_s=0.2)
    assert 0.2 <= asyncio.get_running_loop().time() - t0 < 2.0
    assert not task.done()  # left behind, not awaited for ever
    task.cancel()  # this time it stops (its inner sleep is cancelled)
    await asyncio.wait({task}, timeout=1.0)


async def test_a_cooperative_task_stops_at_once_and_its_error_is_retrieved() -> None:
    async def loop() -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(loop())
    await asyncio.sleep(0)
    await stop_task(task, timeout_s=5.0)
    assert task.cancelled()

    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    await stop_task(failed)  # already done: its exception is retrieved, not raised
    assert isinstance(failed.exception(), RuntimeError)
    await stop_task(None)


async def test_a_hanging_closer_times_out_and_the_next_one_still_runs() -> None:
    ran: list[str] = []
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    async def breaks() -> None:
        raise OSError("gone")

    t0 = asyncio.get_running_loop().time()
    await bounded(hangs, 0.2)
    await bounded(breaks, 1.0)
    await bounded(lambda: ran.append("sync"), 1.0)
    assert ran == ["sync"]
    assert asyncio.get_running_loop().time() - t0 < 2.0


async def test_parent_watch_stops_the_worker_once_its_master_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = asyncio.Event()
    timers: list[tuple[float, object]] = []

    class FakeTimer:
        daemon = False

        def __init__(self, delay: float, fn: object, args: object) -> None:
            timers.append((delay, fn))

        def start(self) -> None:
            pass

    monkeypatch.setattr(lifecycle.threading, "Timer", FakeTimer)
    watch = ParentWatch(grace_s=35.0, interval_s=0.01, stop=stopped.set)
    watch.start(asyncio.get_running_loop())
    await asyncio.sleep(0.05)
    assert not stopped.is_set() and not watch.orphaned  # the same parent: nothing happens
    monkeypatch.setattr(lifecycle.os, "getppid", lambda: watch.parent + 1)
    await asyncio.wait_for(stopped.wait(), 2.0)
    assert watch.orphaned
    assert timers == [(35.0, os._exit)]  # the hard exit past the drain timeout, armed once
    watch.stop()


def test_gc_threshold_defaults_and_override() -> None:
    from gateway.app import GC_THRESHOLD, gc_threshold

    assert gc_threshold({}) == GC_THRESHOLD and GC_THRESHOLD[0] > 700  # fewer gen-0 passes than CPython's
    assert gc_threshold({"GATEWAY_GC_THRESHOLD": "700,10,10"}) == (700, 10, 10)
    assert gc_threshold({"GATEWAY_GC_THRESHOLD": "1000"}) == (1000,)
    for bad in ("a,b", "1,2,3,4", "-5", " , "):
        assert gc_threshold({"GATEWAY_GC_THRESHOLD": bad}) == GC_THRESHOLD
