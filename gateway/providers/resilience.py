"""Retry budgets, jittered backoff, provider wait hints and per-deployment breakers: pure, clock injected.

    RetryBudget   retries at most `ratio` of the requests of the last `window_s` (per provider), plus a floor
    backoff()     full-jitter exponential backoff (AWS architecture blog, "Exponential Backoff and Jitter")
    retry_after_s the provider's own wait hint (retry_after.py): retry-after(-ms), x-ratelimit-reset-*, ...
    Breaker       outlier detection in Envoy's sense: consecutive failures or a failure rate over a window
                  eject a deployment for a cooldown that grows while it keeps failing; one probe brings it back

Nothing here sleeps, reads the wall clock on its own or does I/O: the transport calls these with
its clock, so every rule is unit-tested without waiting (tests/unit/test_resilience.py).
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

import msgspec

Clock = Callable[[], float]
BreakerStateName = Literal["closed", "open", "half_open"]


class RetryBudgetConfig(msgspec.Struct, forbid_unknown_fields=True):
    ratio: float = 0.10  # retries allowed per request of the window (Finagle's percentCanRetry)
    min_retries: int = 3  # retries always allowed per window, so a quiet provider still gets one
    window_s: float = 10.0


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    consecutive_failures: int = 5  # Envoy's consecutive_5xx default
    failure_rate: float = 0.5  # eject when this share of the window's calls failed ...
    min_requests: int = 20  # ... and the window holds at least this many calls
    window_s: float = 10.0  # Envoy's interval
    base_ejection_s: float = 5.0  # cooldown = base x ejections in a row (Envoy: base_ejection_time)
    max_ejection_s: float = 300.0  # Envoy's max_ejection_time default
    probe_timeout_s: float = 30.0  # a probe that never reports frees its slot after this


class _Window:
    """Two counters over a sliding window of `buckets` time slices (old slices drop out whole)."""

    __slots__ = ("_a", "_b", "_last", "_n", "_slice")

    def __init__(self, window_s: float, buckets: int = 10) -> None:
        self._n = buckets
        self._slice = window_s / buckets
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._last: int | None = None

    def _advance(self, now: float) -> int:
        idx = math.floor(now / self._slice)
        if self._last is not None and idx > self._last:
            for i in range(self._last + 1, min(idx, self._last + self._n) + 1):
                self._a[i % self._n] = 0
                self._b[i % self._n] = 0
        if self._last is None or idx > self._last:
            self._last = idx
        return self._last % self._n

    def add(self, now: float, a: int = 0, b: int = 0) -> None:
        i = self._advance(now)
        self._a[i] += a
        self._b[i] += b

    def totals(self, now: float) -> tuple[int, int]:
        self._advance(now)
        return sum(self._a), sum(self._b)

    def clear(self) -> None:
        self._a = [0] * self._n
        self._b = [0] * self._n


class RetryBudget:
    """One provider's retry budget: call `request()` per client request, `try_retry()` before each retry."""

    def __init__(self, cfg: RetryBudgetConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg or RetryBudgetConfig()
        self._clock = clock
        self._window = _Window(self.cfg.window_s)  # a: requests, b: retries
        self.refused = 0  # retries the budget said no to (a counter for metrics)

    def request(self) -> None:
        self._window.add(self._clock(), a=1)

    def allowed(self) -> int:
        """Retries the window still allows (the floor included)."""
        requests, retries = self._window.totals(self._clock())
        return max(0, math.floor(self.cfg.ratio * requests) + self.cfg.min_retries - retries)

    def try_retry(self) -> bool:
        """Withdraw one retry if the budget allows it; False means: give up (or answer the failure)."""
        if self.allowed() <= 0:
            self.refused += 1
            return False
        self._window.add(self._clock(), b=1)
        return True


class Random(Protocol):
    def random(self) -> float: ...


def backoff(attempt: int, base_ms: float, max_ms: float, rng: Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): uniform in [0, min(max, base * 2^attempt)).

    Full jitter spreads the retries of many clients that failed together, so they don't come
    back in one wave (which fixed 50/100 ms steps did).
    """
    cap = min(max_ms, base_ms * 2.0 ** min(attempt, 62))
    return rng.random() * max(cap, 0.0) / 1000.0


def counts_as_failure(status: int | None) -> bool:
    """What a breaker counts against a deployment: no answer (None: connect error, timeout), 429, 5xx."""
    return status is None or status == 429 or status >= 500


class BreakerState(msgspec.Struct, frozen=True):
    """One deployment's breaker as /readyz and the metrics show it."""

    state: BreakerStateName
    ejections: int  # ejections in a row (the cooldown multiplier)
    consecutive_failures: int
    failure_rate: float  # over the window
    reopen_in_s: float  # until a probe may be sent (0 unless open)


class Breaker:
    """One deployment's outlier detector. Ask `allow()` before an attempt, then report `success()`,
    `failure()` or (the attempt was cancelled without a verdict) `abandon()`.

    closed ─(consecutive failures | failure rate)─> open ─(cooldown over)─> half_open: one probe
    open ─(every other deployment out too: `allow(last_resort=True)`)─> one probe at a time
    half_open ─probe ok─> closed;  half_open ─probe fails─> open with a longer cooldown.
    The cooldown is base x ejections in a row, capped; each full window of health after a
    recovery takes one off the multiplier (as Envoy does).
    """

    def __init__(self, cfg: BreakerConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg or BreakerConfig()
        self._clock = clock
        self._window = _Window(self.cfg.window_s)  # a: successes, b: failures
        self._consecutive = 0
        self._ejections = 0
        self._open_until = 0.0
        self._is_open = False
        self._probe_since: float | None = None  # a probe is out (half-open) since then
        self._probe_early = False  # that probe went before the cooldown ended (a last resort)
        self._healthy_since = 0.0
        self.total_ejections = 0  # a counter for metrics

    def _cooldown(self) -> float:
        return min(self.cfg.max_ejection_s, self.cfg.base_ejection_s * self._ejections)

    def allow(self, last_resort: bool = False) -> bool:
        """May an attempt go to this deployment now? In half-open state, True once (the probe).

        `last_resort`: every other deployment of the request is out too. Then the cooldown is not
        waited for: one request at a time goes as a probe (the others are refused at once), so the
        route comes back within one upstream round trip of its provider, not a cooldown later.
        """
        if not self.cfg.enabled or not self._is_open:
            return True
        now = self._clock()
        if now < self._open_until and not last_resort:
            return False
        if self._probe_since is not None and now - self._probe_since < self.cfg.probe_timeout_s:
            return False  # the probe is still out: everyone else keeps away
        self._probe_since = now
        self._probe_early = now < self._open_until
        return True

    def available(self) -> bool:
        """What `allow()` would answer now, without taking the probe slot."""
        if not self.cfg.enabled or not self._is_open:
            return True
        now = self._clock()
        return now >= self._open_until and (
            self._probe_since is None or now - self._probe_since >= self.cfg.probe_timeout_s)

    def success(self) -> None:
        now = self._clock()
        if self._is_open and self._probe_since is None:
            return  # a late answer to an attempt sent before the ejection: only a probe brings it back
        self._consecutive = 0
        if self._is_open:  # the probe came back: the deployment is back, its history starts over
            self._is_open = False
            self._probe_since = None
            self._window.clear()
            self._healthy_since = now
        self._window.add(now, a=1)

    def failure(self) -> None:
        if not self.cfg.enabled:
            return
        now = self._clock()
        if self._is_open:
            if self._probe_since is not None:  # the probe failed: out again, for longer ...
                if self._probe_early:  # ... unless it went early: the cooldown stands as it was
                    self._probe_since = None
                else:
                    self._eject(now)
            return  # late results of attempts sent before the ejection change nothing
        self._consecutive += 1
        self._window.add(now, b=1)
        ok, failed = self._window.totals(now)
        total = ok + failed
        if self._consecutive >= self.cfg.consecutive_failures or (
            total >= self.cfg.min_requests and failed >= self.cfg.failure_rate * total
        ):
            self._eject(now)

    def abandon(self) -> None:
        """The attempt ended without a verdict (the client left): free the probe slot if it was one."""
        self._probe_since = None

    def _eject(self, now: float) -> None:
        if not self._is_open and self._ejections:
            # Envoy: every full interval of health since the last recovery takes one off the multiplier.
            healed = math.floor((now - self._healthy_since) / self.cfg.window_s)
            self._ejections = max(0, self._ejections - healed)
        self._ejections += 1
        self.total_ejections += 1
        self._is_open = True
        self._probe_since = None
        self._open_until = now + self._cooldown()
        self._consecutive = 0
        self._window.clear()

    def state(self) -> BreakerState:
        now = self._clock()
        ok, failed = self._window.totals(now)
        rate = failed / (ok + failed) if ok + failed else 0.0
        name: BreakerStateName = "closed"
        if self._is_open:
            name = "open" if now < self._open_until else "half_open"
        return BreakerState(
            state=name,
            ejections=self._ejections,
            consecutive_failures=self._consecutive,
            failure_rate=rate,
            reopen_in_s=max(0.0, self._open_until - now) if self._is_open else 0.0,
        )

    def retry_in_s(self) -> float:
        """Seconds until this deployment may take a probe (for a retry-after when all are out)."""
        return max(0.0, self._open_until - self._clock()) if self._is_open else 0.0


class Breakers:
    """The breakers of one worker, one per deployment id (e.g. "openai/gpt-4o"), made on first use."""

    def __init__(self, cfg: BreakerConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg or BreakerConfig()
        self._clock = clock
        self._by_id: dict[str, Breaker] = {}

    def get(self, deployment: str) -> Breaker:
        b = self._by_id.get(deployment)
        if b is None:
            b = self._by_id[deployment] = Breaker(self.cfg, self._clock)
        return b

    def items(self) -> list[tuple[str, Breaker]]:
        return sorted(self._by_id.items())

    def states(self) -> dict[str, BreakerState]:
        """For /readyz: every deployment that has taken traffic, by id."""
        return {name: b.state() for name, b in self.items()}


class Resilience:
    """What the pipeline's forward stage consults, built once per worker: a retry budget per provider,
    a breaker per deployment, and the jitter's random source."""

    def __init__(self, cfg: ResilienceSettings, providers: Iterable[str], rng: Random | None = None) -> None:
        self.budgets = {name: RetryBudget(cfg.retry_budget) for name in providers}
        self.breakers = Breakers(cfg.breaker)
        self.rng: Random = rng or _random.Random()

    def worth_a_retry(self, budget: RetryBudget, deployments: Iterable[str]) -> bool:
        """Before a back-off: can a retry go anywhere after it (budget left, a deployment not out)?
        If not, the failure is answered now rather than after a wait that leads nowhere."""
        return budget.allowed() > 0 and any(self.breakers.get(d).available() for d in deployments)

    def budget(self, provider: str) -> RetryBudget:
        found = self.budgets.get(provider)
        if found is None:
            found = self.budgets[provider] = RetryBudget()
        return found


class ResilienceSettings(Protocol):
    retry_budget: RetryBudgetConfig
    breaker: BreakerConfig
