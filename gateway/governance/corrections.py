"""Reservation corrections, merged and written together: one store round trip per interval, not one
per request.

A request reserves its estimated tokens and cost when it is admitted; the correction to its real
usage is not urgent (until it lands, the reservation simply stands, which errs on the safe side),
so corrections wait up to `interval_s`, deltas for the same counter add up, and one script (Redis)
or one transaction (SQLite) applies them all: at 500 requests per second, 20 writes instead of 500.
A counter with less than a quarter of its limit left is corrected at once: there the correction
decides whether the next request fits. A store outage drops the batch: the reservations stand, as
they would for one request.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

from gateway.store import StoreUnavailable

if TYPE_CHECKING:
    from gateway.governance.counters import Counters


class Corrections:
    def __init__(self, counters: Counters, interval_s: float = 0.05, max_pending: int = 1024) -> None:
        self._counters = counters
        self._interval = interval_s
        self._max_pending = max_pending
        self._windows: defaultdict[tuple[int, str], int] = defaultdict(int)  # (second, key) -> delta
        self._caps: dict[str, tuple[int, int]] = {}  # key -> (delta, ttl)
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Future[None]] = set()
        self.batches = 0
        self.dropped = 0  # batches lost to a store outage

    @property
    def pending(self) -> int:
        return len(self._windows) + len(self._caps)

    def add(self, sec: int, windows: list[tuple[str, int]], caps: list[tuple[str, int, int]], *,
            now: bool = False) -> None:
        """Queue one request's corrections; `now` writes the batch at once (a counter near its limit)."""
        for key, delta in windows:
            self._windows[(sec, key)] += delta
        for key, delta, ttl in caps:
            old = self._caps.get(key, (0, ttl))[0]
            self._caps[key] = (old + delta, ttl)
        if now or self.pending >= self._max_pending:
            self._write_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._write_now)

    def _write_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        windows = [(sec, key, d) for (sec, key), d in self._windows.items() if d]
        caps = [(key, d, ttl) for key, (d, ttl) in self._caps.items() if d]
        self._windows.clear()
        self._caps.clear()
        if windows or caps:
            task = asyncio.ensure_future(self._write(windows, caps))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        try:
            await self._counters.adjust(windows, caps)
            self.batches += 1
        except StoreUnavailable:
            self.dropped += 1  # counted and logged by the store's breaker; the reservations stand

    async def flush(self) -> None:
        """Write what is pending now and wait for every write under way (tests, shutdown)."""
        self._write_now()
        if self._writes:
            await asyncio.gather(*self._writes)
