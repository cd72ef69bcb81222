"""Watches how much of phase 4 is shed (no embedding in budget, or the loop lagging) and says so."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from gateway.cache.types import CacheStats

log = structlog.get_logger("gateway.cache")

DEGRADED_KEY = "semantic_cache"


@dataclass(frozen=True, slots=True)
class ShedReport:
    lookups: int  # phase-4 lookups in the window (prose requests with an embedder)
    shed: int  # of them, those that never searched the index
    share: float


class ShedWatch:
    """Share of phase-4 lookups shed over the last window, from the MetaCache's own counters.

    A lookup is shed when phase 4 applied but never got to search (the embedding was refused or
    timed out, or the loop lagged) or its candidates could not be judged within the verifier's
    budget: `phases[4].lookups - semantic_searches + phases[4].unjudged`. `check()` returns the
    text for `/readyz` while the share is above `max_share` (over at least `min_lookups` lookups)
    and logs each transition once, so a machine too slow for the model is visible, not silent.
    """

    def __init__(self, stats: CacheStats, *, max_share: float = 0.05, window_s: float = 60.0,
                 min_lookups: int = 50) -> None:
        self._stats = stats
        self.max_share = max_share
        self.window_s = window_s
        self.min_lookups = min_lookups
        self._base = (time.monotonic(), *self._counts())
        self._last: ShedReport | None = None
        self._shedding = False

    def _counts(self) -> tuple[int, int]:
        p4 = self._stats.phases[4]
        return p4.lookups, self._stats.semantic_searches - p4.unjudged

    def report(self, now: float | None = None) -> ShedReport:
        """The window's figures; a window older than window_s is closed and a new one starts."""
        now = time.monotonic() if now is None else now
        t0, lookups0, searched0 = self._base
        lookups, searched = self._counts()
        n = lookups - lookups0
        shed = max(0, n - (searched - searched0))
        current = ShedReport(n, shed, shed / n if n else 0.0)
        if now - t0 >= self.window_s:
            self._last = current
            self._base = (now, lookups, searched)
        # A closed window speaks until the next one has enough lookups of its own.
        if current.lookups < self.min_lookups and self._last is not None:
            return self._last
        return current

    def check(self, now: float | None = None) -> str | None:
        """The degraded reason while too much of phase 4 is shed, else None."""
        r = self.report(now)
        shedding = r.lookups >= self.min_lookups and r.share > self.max_share
        if shedding != self._shedding:
            self._shedding = shedding
            if shedding:
                log.warning("semantic_cache_shed", share=round(r.share, 3), lookups=r.lookups,
                            bound=self.max_share, why="the embedding or verifier model is too slow here")
            else:
                log.info("semantic_cache_not_shed", share=round(r.share, 3), lookups=r.lookups)
        if not shedding:
            return None
        return f"phase 4 shed for {r.share:.0%} of {r.lookups} lookups (bound {self.max_share:.0%})"
