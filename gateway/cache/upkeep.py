"""The cache's upkeep off the lookup's path: fire-and-forget store bookkeeping (LRU touches, stale
vector removals) whose failure during a store outage is ignored, and the LRU eviction that keeps a
deployment's entries under `cache.max_entries`."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from gateway.cache import keys as K
from gateway.cache.semantic import VectorIndex
from gateway.store import Store, StoreUnavailable


class Background:
    """Tasks the cache starts and never awaits on a request; `drain` waits for them (shutdown, tests)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(_quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except StoreUnavailable:
        pass


async def evict(store: Store, max_entries: int, l1: OrderedDict[str, Any], index: VectorIndex) -> int:
    """Trim the shared LRU to `max_entries`: the entries, this worker's L1 copies and index vectors
    of what fell out go. Returns how many were evicted."""
    evicted = await store.lru_trim(K.LRU_GROUP, max_entries)
    if not evicted:
        return 0
    by_partition: dict[str, list[str]] = {}
    for member in evicted:
        partition, exact = K.split_member(member)
        by_partition.setdefault(partition, []).append(exact)
        l1.pop(exact, None)
        index.remove_local(partition, exact)
    # Intent pointers and recent-list items of evicted entries dangle harmlessly: they resolve
    # to a missing entry, which is a miss.
    await store.delete(*(K.entry_key(e) for ex in by_partition.values() for e in ex))
    for partition, exacts in by_partition.items():
        await store.vec_remove(partition, exacts)
    return len(evicted)
