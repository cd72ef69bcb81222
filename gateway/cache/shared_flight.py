"""Single flight across workers and pods: identical concurrent misses anywhere make one upstream call.

`SingleFlight` (singleflight.py) lets one request per worker go upstream for a key; this adds a lease
in the shared store so that one worker in the whole fleet does. The worker-local leader claims
`gw:sf:<exact key>` (SET NX with a TTL). If another worker or pod holds it, the request waits for
that leader's write-back: it polls the exact cache entry and the lease, and answers from the entry
as soon as it appears. It goes upstream itself when the lease disappears without an entry (the
leader failed, or the answer was not storable) or when the wait runs out.

Only cacheable misses pay for it: one store round trip to claim, one to release after the
write-back. A store outage skips it (each worker leads for itself, as without it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.cache.keys import Keys
    from gateway.cache.metacache import CacheHit, MetaCache

LEASE_PREFIX = "gw:sf:"


@dataclass(slots=True)
class SharedFlightStats:
    claimed: int = 0  # this worker led the fleet for a key
    waited: int = 0  # another worker or pod was leading: this request waited
    served: int = 0  # ... and was answered from its write-back
    gave_up: int = 0  # ... and went upstream itself (leader failed, not storable, or too slow)


class SharedFlight:
    def __init__(self, store: Store, cache: MetaCache, wait_s: float = 30.0, poll_s: float = 0.02) -> None:
        self._store = store
        self._cache = cache
        self.wait_s = wait_s  # also the lease's TTL: a leader that died frees the key after this
        self.poll_s = poll_s
        self.stats = SharedFlightStats()

    async def claim(self, exact: str) -> bool:
        """True when this request should go upstream (it holds the lease, or the store is away)."""
        try:
            won = await self._store.claim(LEASE_PREFIX + exact, self.wait_s)
        except StoreUnavailable:
            return True
        if won:
            self.stats.claimed += 1
        return won

    async def wait(self, k: Keys) -> CacheHit | None:
        """The leader's answer once written back, or None: then go upstream."""
        self.stats.waited += 1
        deadline = time.monotonic() + self.wait_s
        lease = LEASE_PREFIX + k.exact
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(self.poll_s)
                hit = await self._cache.exact_hit(k)
                if hit is not None:
                    self.stats.served += 1
                    return hit
                if await self._store.get(lease) is None:  # released without an entry, or expired
                    hit = await self._cache.exact_hit(k)  # written between the two reads?
                    if hit is not None:
                        self.stats.served += 1
                        return hit
                    break
        except StoreUnavailable:
            pass
        self.stats.gave_up += 1
        return None

    async def release(self, exact: str) -> None:
        try:
            await self._store.delete(LEASE_PREFIX + exact)
        except StoreUnavailable:
            pass  # it expires by itself
