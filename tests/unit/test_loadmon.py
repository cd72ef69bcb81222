"""The loop monitor reports a worker as busy while its event loop is blocked, and idle after."""

from __future__ import annotations

import asyncio
import time

from gateway.worker.loadmon import LoopMonitor


async def test_blocked_loop_reads_busy_then_recovers() -> None:
    mon = LoopMonitor(interval_s=0.01, busy_ms=3.0)
    mon.start()
    try:
        await asyncio.sleep(0.05)
        assert not mon.busy()
        for _ in range(3):
            time.sleep(0.05)  # noqa: ASYNC251 -- hog the loop as a CPU-bound worker would
            await asyncio.sleep(0)
            await asyncio.sleep(0.011)
        assert mon.busy() and mon.lag_ms > 3.0
        for _ in range(100):  # calm again: the average decays below the bar
            await asyncio.sleep(0.01)
            if not mon.busy():
                break
        assert not mon.busy()
    finally:
        await mon.stop()
