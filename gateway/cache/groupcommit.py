"""Group commit of cache entries: writes that arrive while a batch is being written go out together
in the next one (one round trip, one transaction), so a burst of misses costs a few commits."""

from __future__ import annotations

import asyncio

from gateway.store import EntryWrite, Store


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[EntryWrite] = []
        self._done: asyncio.Future[None] | None = None  # resolves when the queued writes landed
        self._flusher: asyncio.Future[None] | None = None

    async def put(self, item: EntryWrite) -> None:
        """Returns once `item` is written; raises what the store raised for its batch."""
        self._queue.append(item)
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._done.add_done_callback(_retrieve)
        done = self._done
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            done, self._done = self._done, None
            assert done is not None
            try:
                await self._store.put_entries(batch)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # marked retrieved: a batch nobody awaits any more must not warn
