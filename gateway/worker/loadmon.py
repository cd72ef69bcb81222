"""Event-loop lag: each worker's own, cheap measure of being CPU-bound.

Optional CPU work (phase-4 embeddings) is skipped while the loop lags, so under overload the
worker spends its core on answering requests instead of queueing optional work behind them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.worker.lifecycle import stop_task


class LoopMonitor:
    def __init__(self, interval_s: float = 0.02, busy_ms: float = 3.0) -> None:
        self.interval_s = interval_s
        self.busy_ms = busy_ms
        self.lag_ms = 0.0  # EWMA of how late the loop wakes a sleeper
        self.cpu = 0.0  # EWMA of the process's CPU seconds per second: is the lag ours or a neighbour's?
        self._task: asyncio.Task[None] | None = None
        # Called with (loop time, lag_ms, cpu) after every sample: the admission's concurrency limit.
        self.on_sample: Callable[[float, float, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t, c = loop.time(), time.process_time()
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            lag = max(0.0, (now - t - self.interval_s) * 1000.0)
            self.lag_ms = 0.7 * self.lag_ms + 0.3 * lag
            if now > t:
                self.cpu = 0.7 * self.cpu + 0.3 * min(1.0, (time.process_time() - c) / (now - t))
            if self.on_sample is not None:
                self.on_sample(now, self.lag_ms, self.cpu)

    def busy(self) -> bool:
        return self.lag_ms > self.busy_ms
