"""A bounded per-worker queue flushed to a sink in batches, off the request path.

`put` is what a request pays: a length check and a deque append. A background task writes batches
every `interval_s` (or at once when `batch_size` items wait). A full queue, or a sink that fails or
stalls, drops items and counts them (`dropped`); nothing ever waits for the sink but the flusher.
`close()` writes what is left (bounded by a timeout) so a normal stop loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("gateway.observe")
T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, name: str, write: Callable[[list[T]], Awaitable[None]], *, max_queue: int = 10_000,
                 batch_size: int = 256, interval_s: float = 0.5, write_timeout_s: float = 5.0) -> None:
        self.name = name
        self._write = write
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.write_timeout_s = write_timeout_s
        self.queue: deque[T] = deque()
        self.written = 0
        self.dropped = 0  # queue full, or lost with a batch the sink refused
        self.failures = 0  # batches the sink refused
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._stopping = False

    def put(self, item: T) -> bool:
        q = self.queue
        if len(q) >= self.max_queue:
            self.dropped += 1
            return False
        q.append(item)
        if len(q) >= self.batch_size:
            self._wake.set()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self.queue:
            n = min(len(self.queue), self.batch_size)
            batch = [self.queue.popleft() for _ in range(n)]
            await self._write_batch(batch)

    async def _write_batch(self, batch: list[T]) -> None:
        try:
            await asyncio.wait_for(self._write(batch), self.write_timeout_s)
        except asyncio.CancelledError:
            self.dropped += len(batch)
            raise
        except Exception as exc:
            self.failures += 1
            self.dropped += len(batch)
            if not self._failing:
                self._failing = True
                log.warning("observe_sink_failed", sink=self.name, error=repr(exc), dropped=len(batch))
            return
        self.written += len(batch)
        if self._failing:
            self._failing = False
            log.info("observe_sink_recovered", sink=self.name)

    async def close(self, timeout_s: float = 10.0) -> None:
        # Let a write in progress finish (cancelling it would lose its batch), then write the rest.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            if not self._task.done():
                self._task.cancel()
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            self.dropped += len(self.queue)
            self.queue.clear()
