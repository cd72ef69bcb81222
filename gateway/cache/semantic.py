"""The per-worker vector index for phase 4: an in-memory mirror of the store's partition vectors, KNN.

Plain Redis has no vector search, and a network scan per request would cost more than the model.
So each worker holds the vectors of the partitions it has looked up as one float32 matrix per
partition: a lookup is a single matrix-vector product (unit vectors, so the dot product is the
cosine). A partition is loaded from the store the first time it is searched; after that the worker
follows the store's change log from a cursor, at most every `sync_interval_s`, so entries written by
other workers and pods appear within a second. A cursor that fell off the log drops every mirror
(they reload on demand); a "clear" event does the same and tells the owner through `on_clear`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from gateway.store import CLEAR, Store

DIM = 384


class _Partition:
    """Rows of a matrix that grows by doubling; removal moves the last row into the hole."""

    __slots__ = ("matrix", "members", "rows")

    def __init__(self) -> None:
        self.matrix = np.zeros((16, DIM), dtype=np.float32)
        self.members: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, member: str, vec: np.ndarray) -> None:
        row = self.rows.get(member)
        if row is None:
            row = len(self.members)
            if row == len(self.matrix):
                grown = np.zeros((2 * row, DIM), dtype=np.float32)
                grown[:row] = self.matrix
                self.matrix = grown
            self.members.append(member)
            self.rows[member] = row
        self.matrix[row] = vec

    def remove(self, member: str) -> None:
        row = self.rows.pop(member, None)
        if row is None:
            return
        last = len(self.members) - 1
        if row != last:
            moved = self.members[last]
            self.matrix[row] = self.matrix[last]
            self.members[row] = moved
            self.rows[moved] = row
        self.members.pop()

    def knn(self, query: np.ndarray, k: int, threshold: float) -> list[tuple[str, float]]:
        n = len(self.members)
        if n == 0:
            return []
        scores = self.matrix[:n] @ query
        if n > k:
            top = np.argpartition(-scores, k)[:k]
        else:
            top = np.arange(n)
        best = sorted(((float(scores[i]), int(i)) for i in top), reverse=True)
        return [(self.members[i], s) for s, i in best if s >= threshold]


def as_vector(raw: bytes) -> np.ndarray | None:
    vec = np.frombuffer(raw, dtype=np.float32)
    return vec if vec.shape == (DIM,) else None


class VectorIndex:
    def __init__(
        self,
        store: Store,
        *,
        max_partitions: int = 1024,
        sync_interval_s: float = 0.25,
        on_clear: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._parts: OrderedDict[str, _Partition] = OrderedDict()
        self._max_partitions = max_partitions
        self._interval = sync_interval_s
        self._cursor: str | None = None
        self._next_sync = 0.0
        self._syncing = False
        self._on_clear = on_clear

    def __len__(self) -> int:
        return sum(len(p.members) for p in self._parts.values())

    @property
    def nbytes(self) -> int:
        """Memory of the mirrored matrices (allocated rows included)."""
        return sum(p.matrix.nbytes for p in self._parts.values())

    async def knn(
        self, partition: str, query: np.ndarray, k: int, threshold: float
    ) -> list[tuple[str, float]]:
        """Up to k (member, cosine) at or above threshold, best first. Raises StoreUnavailable."""
        await self.sync()
        part = self._parts.get(partition)
        if part is None:
            part = await self._load(partition)
        else:
            self._parts.move_to_end(partition)
        return part.knn(query, k, threshold)

    def add_local(self, partition: str, member: str, vec: np.ndarray) -> None:
        """Our own write: visible to this worker at once (the log brings it to the others)."""
        part = self._parts.get(partition)
        if part is not None:
            part.add(member, vec)

    def remove_local(self, partition: str, member: str) -> None:
        part = self._parts.get(partition)
        if part is not None:
            part.remove(member)

    def clear(self) -> None:
        self._parts.clear()

    async def _load(self, partition: str) -> _Partition:
        if self._cursor is None:
            # Take the cursor before loading, so nothing written in between is missed.
            self._cursor = await self._store.vec_cursor()
        raw = await self._store.vec_load(partition)
        part = _Partition()
        for member, blob in raw.items():
            vec = as_vector(blob)
            if vec is not None:
                part.add(member, vec)
        self._parts[partition] = part
        while len(self._parts) > self._max_partitions:
            self._parts.popitem(last=False)
        return part

    async def sync(self, force: bool = False) -> None:
        """Apply the change log since our cursor (rate-limited; concurrent callers don't queue)."""
        now = time.monotonic()
        if self._syncing or (not force and now < self._next_sync):
            return
        self._syncing = True
        try:
            if self._cursor is None:
                self._cursor = await self._store.vec_cursor()
                return
            for _ in range(10):  # bounded catch-up per call; the rest comes on the next one
                got = await self._store.vec_changes(self._cursor)
                if got is None:
                    self._parts.clear()
                    self._cursor = await self._store.vec_cursor()
                    return
                self._cursor, changes = got
                for partition, member, blob in changes:
                    self._apply(partition, member, blob)
                if len(changes) < 1000:
                    return
        finally:
            self._syncing = False
            self._next_sync = time.monotonic() + self._interval

    def _apply(self, partition: str, member: str, blob: bytes | None) -> None:
        if partition == CLEAR:
            self._parts.clear()
            if self._on_clear is not None:
                self._on_clear()
            return
        part = self._parts.get(partition)
        if part is None:
            return  # not mirrored here: it loads fresh when first searched
        vec = as_vector(blob) if blob else None
        if vec is None:
            part.remove(member)
        else:
            part.add(member, vec)
