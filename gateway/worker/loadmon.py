"""Event-loop lag: each worker's own, cheap measure of being CPU-bound.

Optional CPU work (phase-4 embeddings) is skipped while the loop lags, so under overload the
worker spends its core on answering requests instead of queueing optional work behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class LoopMonitor:
    def __init__(self, interval_s: float = 0.02, busy_ms: float = 3.0) -> None:
        self.interval_s = interval_s
        self.busy_ms = busy_ms
        self.lag_ms = 0.0  # EWMA of how late the loop wakes a sleeper
        self._task: asyncio.Task[None] | None = None
        # Called with (loop time, lag_ms) after every sample: the admission's concurrency limit.
        self.on_sample: Callable[[float, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, (loop.time() - t - self.interval_s) * 1000.0)
            self.lag_ms = 0.7 * self.lag_ms + 0.3 * lag
            if self.on_sample is not None:
                self.on_sample(loop.time(), self.lag_ms)

    def busy(self) -> bool:
        return self.lag_ms > self.busy_ms
