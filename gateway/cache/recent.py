"""Phase 2's working set: each partition's recent intents, decoded once per worker and shared.

The list lives in the store (so every worker and pod feeds it); a worker keeps a decoded copy for
RECENT_TTL_S, reads it once for all concurrent lookups, and sees its own writes at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import NamedTuple

import msgspec

from gateway.cache import keys as K
from gateway.store import Store

RECENT_TTL_S = 0.25  # other workers' new intents reach phase 2 here within this time
MAX_PARTITIONS = 1024
_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(tuple[str, str, str]))


class Recent(NamedTuple):
    exact: str
    tokens: list[str]
    token_set: frozenset[str]
    query: str

    @classmethod
    def of(cls, exact: str, norm: str, query: str) -> Recent:
        tokens = norm.split(" ")
        return cls(exact, tokens, frozenset(tokens), query)


def encode(exact: str, norm: str, query: str) -> bytes:
    return _codec[0].encode((exact, norm, query))


class RecentIntents:
    def __init__(self, store: Store, window: int) -> None:
        self._store = store
        self._window = window
        self._cached: OrderedDict[str, tuple[float, list[Recent]]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[list[Recent]]] = {}

    async def get(self, partition: str) -> list[Recent]:
        cached = self._cached.get(partition)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # One read per partition at a time: concurrent lookups share it instead of piling up.
        reading = self._reading.get(partition)
        if reading is None:
            reading = asyncio.ensure_future(self._read(partition))
            self._reading[partition] = reading
            reading.add_done_callback(lambda _: self._reading.pop(partition, None))
        return await asyncio.shield(reading)

    async def _read(self, partition: str) -> list[Recent]:
        now = time.monotonic()
        raw = await self._store.list_range(K.recent_key(partition), self._window)
        items = [Recent.of(*_codec[1].decode(item)) for item in raw]
        self._cached[partition] = (now + RECENT_TTL_S, items)
        self._cached.move_to_end(partition)
        while len(self._cached) > MAX_PARTITIONS:
            self._cached.popitem(last=False)
        return items

    def remember(self, partition: str, item: Recent) -> None:
        """This worker sees its own write at once, without re-reading the list."""
        cached = self._cached.get(partition)
        if cached is not None:
            self._cached[partition] = (cached[0], [item, *cached[1]][: self._window])
