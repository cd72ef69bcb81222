"""Single flight: identical concurrent cache misses in one worker make one upstream call.

The first caller for a key (the exact cache key) becomes the leader and goes upstream; callers that
arrive while it is in flight wait, bounded, for the leader's answer, which the leader hands over
with `publish()` (the assembled non-streamed body, so a streamed leader serves its followers too:
they replay it). A follower whose leader failed, published nothing or took too long gets None and
does its own upstream call, so a follower is never worse off than without single flight.

    async with flight.acquire(exact_key) as slot:
        if slot.leader:
            body = await forward(...)          # stream to our client, assemble as it passes
            slot.publish(body)                 # followers get it at once (before the write-back)
        elif slot.result is not None:
            serve(slot.result)                 # JSON, or replay.replay_openai(...) for a stream
        else:
            body = await forward(...)          # leader failed or timed out: go on our own

Scope: per worker process; the worker's leader then takes a lease in the shared store
(shared_flight.py), so that one worker in the whole fleet goes upstream and the others answer from
its write-back. `run()` is the one-call form for plain coroutines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Slot:
    leader: bool
    result: bytes | None = None  # followers: the leader's published answer, if any
    _future: asyncio.Future[bytes | None] | None = field(default=None, repr=False)

    def publish(self, body: bytes) -> None:
        """Leader: hand the answer to every waiting follower."""
        if self._future is not None and not self._future.done():
            self._future.set_result(body)


@dataclass(slots=True)
class FlightStats:
    leaders: int = 0
    followers: int = 0
    served: int = 0  # followers answered by a leader
    timeouts: int = 0


class SingleFlight:
    def __init__(self, wait_s: float = 60.0) -> None:
        self.wait_s = wait_s
        self.stats = FlightStats()
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._runs: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    @asynccontextmanager
    async def acquire(self, key: str) -> AsyncIterator[Slot]:
        future = self._flights.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._flights[key] = future
            self.stats.leaders += 1
            try:
                yield Slot(leader=True, _future=future)
            finally:
                # Release followers even when the leader failed or was cancelled: they get None.
                if self._flights.get(key) is future:
                    del self._flights[key]
                if not future.done():
                    future.set_result(None)
            return
        self.stats.followers += 1
        try:
            # shield: a follower giving up must not cancel the flight for everyone else
            result = await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            self.stats.timeouts += 1
            result = None
        if result is not None:
            self.stats.served += 1
        yield Slot(leader=False, result=result)

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory` once per key among concurrent callers; all get its result (or exception)."""
        shared = self._runs.get(key)
        if shared is None:
            shared = asyncio.ensure_future(factory())
            self._runs[key] = shared
            self.stats.leaders += 1
            shared.add_done_callback(lambda f: self._landed(key, f))
        else:
            self.stats.followers += 1
        return await asyncio.shield(shared)

    def _landed(self, key: str, future: asyncio.Future[Any]) -> None:
        self._runs.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved: callers that all gave up must not leave a warning
