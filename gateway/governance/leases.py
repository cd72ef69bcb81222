"""Quota leases: each worker takes a slice of a key's limits from the store and admits requests from
it locally, so the store sees one admission per lease, not one per request.

A lease is an ordinary admission in the store (the same atomic script: every window and budget of
the key, all or nothing) for `slice` times what one request needs, so the store's count is exact
at all times: it holds every request admitted plus what the outstanding leases still hold. Nothing
is ever admitted beyond a limit (a lease is refused where a request would be); the price is that a
worker may refuse a little early while other workers hold unused slices. That error is bounded by
the leases outstanding, at most `workers x slice` per window, and shrinks near a limit: a lease is
only taken while the store says at least `LEASE_HEADROOM` leases' worth is left, so the last part of
every limit is admitted request by request, exactly as without leases. A lease lives `ttl_s` (1 s)
at most; what it did not use is given back to the store then (through the batched corrections).

Leases are sized from the limit (`slice` = 1/`LEASE_FRACTION` of it, in units of this request's
amounts): a limit too small for a slice of two requests is never leased.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.governance.counters import Cap, Counters, Verdict, Window, WindowState

if TYPE_CHECKING:
    from gateway.governance.corrections import Corrections

LEASE_FRACTION = 64  # a lease holds 1/64 of each limit
LEASE_HEADROOM = 4  # lease only while 4 leases' worth is left: near the limit, admit one by one
MIN_SLICE = 2  # a lease must cover at least this many requests to be worth taking


class Lease:
    __slots__ = ("caps", "expires", "left", "limits", "sec", "used", "windows")

    def __init__(self, sec: int, windows: list[Window], caps: list[Cap], verdict: Verdict, ttl_s: float) -> None:
        self.sec = sec  # the store bucket the lease was charged to
        self.windows = [w.key for w in windows]
        self.caps = [(c.key, c.ttl_s) for c in caps]
        self.limits = [w.limit for w in windows]
        self.left = [w.amount for w in windows] + [c.amount for c in caps]  # what is still unused
        self.used = [st.used + w.amount for st, w in zip(verdict.windows, windows, strict=True)]
        self.expires = time.monotonic() + ttl_s

    def take(self, windows: list[Window], caps: list[Cap]) -> bool:
        amounts = [w.amount for w in windows] + [c.amount for c in caps]
        if any(a > left for a, left in zip(amounts, self.left, strict=True)):
            return False
        self.left = [left - a for a, left in zip(amounts, self.left, strict=True)]
        return True

    def states(self) -> list[WindowState]:
        """Where the caller stands, for the x-ratelimit headers: as of the lease, minus what it still holds."""
        return [WindowState(used - left, 0, 0) for used, left in zip(self.used, self.left, strict=False)]


class Leases:
    """One worker's leases, keyed by the set of counters a request touches."""

    def __init__(self, counters: Counters, corrections: Corrections, ttl_s: float = 1.0) -> None:
        self.counters = counters
        self.corrections = corrections
        self.ttl_s = ttl_s
        self._held: dict[tuple[str, ...], Lease] = {}
        self._pending: dict[tuple[str, ...], asyncio.Future[Lease | None]] = {}
        self._room: dict[tuple[str, ...], float] = {}  # slices left in the store, as last seen
        self.taken = 0  # leases taken from the store
        self.served = 0  # requests admitted from a lease

    def eligible(self, windows: list[Window], caps: list[Cap]) -> bool:
        """A lease must hold at least MIN_SLICE requests of this size in every counter."""
        return all(w.amount * MIN_SLICE * LEASE_FRACTION <= w.limit for w in windows) and \
            all(c.amount * MIN_SLICE * LEASE_FRACTION <= c.limit for c in caps)

    def take(self, windows: list[Window], caps: list[Cap]) -> Lease | None:
        """Admit from a held lease, without the store (None: no lease, or not enough left in it)."""
        key = _key(windows, caps)
        lease = self._held.get(key)
        if lease is None:
            return None
        if time.monotonic() >= lease.expires:
            self._give_back(key, lease)
            return None
        if not lease.take(windows, caps):
            self._give_back(key, lease)
            return None
        self.served += 1
        return lease

    async def acquire(self, windows: list[Window], caps: list[Cap]) -> Lease | None:
        """Take a new lease from the store and admit this request from it; None when the store has
        too little left for a lease (the caller then admits the request on its own). One acquisition
        per key at a time: requests arriving meanwhile wait for it."""
        key = _key(windows, caps)
        pending = self._pending.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return self.take(windows, caps)
        fut: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            lease = await self._lease(windows, caps)
            fut.set_result(lease)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters fall back to admitting on their own
            raise
        finally:
            del self._pending[key]
        if lease is None:
            return None
        self._held[key] = lease
        return self.take(windows, caps)

    async def _lease(self, windows: list[Window], caps: list[Cap]) -> Lease | None:
        key = _key(windows, caps)
        slice_w, slice_c = _slices(windows, caps)
        verdict = await self.counters.admit(slice_w, slice_c)
        self._room[key] = _room(verdict, slice_w, slice_c, charged=verdict.ok)
        if not verdict.ok:
            return None
        self.taken += 1
        return Lease(verdict.now, slice_w, slice_c, verdict, self.ttl_s)

    def leasing(self, windows: list[Window], caps: list[Cap]) -> bool:
        """Far enough from every limit (as last seen) for a lease: LEASE_HEADROOM slices left."""
        return self._room.get(_key(windows, caps), LEASE_HEADROOM) >= LEASE_HEADROOM

    def observe(self, windows: list[Window], caps: list[Cap], verdict: Verdict) -> None:
        """A request admitted on its own: its verdict says how much room is left (leasing resumes
        once the window has slid far enough)."""
        slice_w, slice_c = _slices(windows, caps)
        self._room[_key(windows, caps)] = _room(verdict, slice_w, slice_c, charged=False, own=(windows, caps))

    def _give_back(self, key: tuple[str, ...], lease: Lease) -> None:
        """Return what a lease did not use (batched with the other corrections)."""
        if self._held.get(key) is lease:
            del self._held[key]
        nw = len(lease.windows)
        windows = [(k, -left) for k, left in zip(lease.windows, lease.left[:nw], strict=True) if left]
        caps = [(k, -left, ttl) for (k, ttl), left in zip(lease.caps, lease.left[nw:], strict=True) if left]
        lease.left = [0] * len(lease.left)
        if windows or caps:
            self.corrections.add(lease.sec, windows, caps)

    def release_all(self) -> None:
        for key, lease in list(self._held.items()):
            self._give_back(key, lease)


def _key(windows: list[Window], caps: list[Cap]) -> tuple[str, ...]:
    return (*(w.key for w in windows), *(c.key for c in caps))


def _slices(windows: list[Window], caps: list[Cap]) -> tuple[list[Window], list[Cap]]:
    return ([Window(w.key, w.limit, max(w.amount, w.limit // LEASE_FRACTION)) for w in windows],
            [Cap(c.key, c.limit, max(c.amount, c.limit // LEASE_FRACTION), c.ttl_s) for c in caps])


def _room(v: Verdict, windows: list[Window], caps: list[Cap], *, charged: bool,
          own: tuple[list[Window], list[Cap]] | None = None) -> float:
    """How many slices are left in the tightest counter after this verdict."""
    rooms = []
    for i, (st, w) in enumerate(zip(v.windows, windows, strict=True)):
        used = st.used + (w.amount if charged else (own[0][i].amount if own and v.ok else 0))
        rooms.append((w.limit - used) / w.amount)
    for j, (spent, c) in enumerate(zip(v.spent, caps, strict=True)):
        used = spent + (c.amount if charged else (own[1][j].amount if own and v.ok else 0))
        rooms.append((c.limit - used) / c.amount)
    return min(rooms) if rooms else float("inf")
