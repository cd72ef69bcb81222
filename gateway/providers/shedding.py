"""Overload shedding: a concurrency limit that follows the event loop's lag, a bounded FIFO wait for
a slot, and an immediate 503 + `retry-after` for what would wait too long.

Why not just a large in-flight bound: one worker is one event loop on one core. Past its capacity,
every admitted request runs interleaved with all the others, each await waiting for a full pass over
the ready queue; a request needs a dozen passes, and with 1,000 in flight a pass took 80-150 ms
(measured: p99 1.8-3.2 s at 150% of capacity, 2.1 s at 1,000 closed-loop connections, with the bound
at 1024 alone; docs/resilience.md). Requests that wait for a slot in a FIFO instead cost no CPU and
leave in arrival order: the ones worked on finish in about their own time, and the wait in front of
them is bounded.

- `limit`: the requests being worked on. AIMD on the loop's lag (the CPU queue itself, whatever the
  upstream's latency): above `lag_target_ms`, while the process itself uses the CPU, it shrinks by
  10% per sample (down to `min_concurrency`); otherwise, while requests wait, it grows by 10% (up to
  `max_concurrency`). An LLM upstream that takes seconds costs no CPU while it streams, so the limit
  grows to what that needs; a latency-gradient limiter (Envoy's, Netflix's) would read the
  upstream's variance as congestion.
- The wait: a request past the limit waits in arrival order. With `max_queue_ms` (off by default:
  a closed loop that crosses it retries at once and storms) it is refused at once when its expected
  wait (requests ahead / the rate slots free up) passes the bound, and one that did wait that long
  is refused then.
- `max_in_flight` bounds the whole (worked on + waiting): a closed population of clients (N
  connections, each waiting for its answer) never exceeds N, so it waits its turn instead of being
  refused; an open-loop excess finds the bound and is refused at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

import msgspec

from gateway.errors import Overloaded

MAX_LIMIT = 1 << 16  # the concurrency limit's ceiling when max_in_flight is 0 (no bound)
_DECREASE = 0.9  # per lag sample above target
_INCREASE = 1.1  # per lag sample below target while requests wait: x2 in about 150 ms at 20 ms samples
_CPU_BOUND = 0.3  # below this share of a core the lag is not the worker's own work
_RATE_TAU_S = 1.0  # time constant of the completion rate's EWMA


class AdmissionConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Per worker: requests worked on plus waiting for a slot; past it an immediate 503 (0 = no bound).
    max_in_flight: int = 1024
    retry_after_s: int = 1  # what the refusal tells the client to wait
    # Per worker and client address; 0 = no bound. Off by default: behind a load balancer or an
    # ingress every request comes from the proxy's address (cap connections there instead).
    max_per_client: int = 0
    adaptive: bool = True  # false: no concurrency limit below max_in_flight and no wait (refused past it)
    lag_target_ms: float = 10.0  # the loop lag the concurrency limit steers to
    min_concurrency: int = 256  # the limit never goes below this (a loop lagging for other reasons)
    max_concurrency: int = 0  # ... nor above this (0: max_in_flight); equal to min_concurrency: a fixed limit
    max_queue_ms: int = 0  # a request that would wait longer for a slot is refused at once (0 = no bound)


def client_host(client: str) -> str:
    """The address part of an RSGI `scope.client` ("10.0.0.7:51234", "[::1]:51234")."""
    if client.startswith("["):
        return client[1:].split("]", 1)[0]
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else client


class _Waiter:
    __slots__ = ("fut", "host", "since")

    def __init__(self, since: float, fut: asyncio.Future[bool], host: str | None) -> None:
        self.since = since
        self.fut = fut
        self.host = host


class Admission:
    """The worker's admission. `enter(host)` before any work: True (go), False (answer `refusal()`),
    or a future to `wait()` for; `leave(host)` in the `finally` of an admitted request. `tick(now,
    lag_ms)` on every loop-lag sample moves the limit and refuses waiters that waited too long.

    Only the event loop thread touches it (one worker = one loop), so plain integers suffice. The
    per-client counts hold only addresses with a request in flight, so they stay as small as the load.
    """

    __slots__ = ("_by_client", "_cap", "_ceiling", "_clock", "_completed", "_lag_target", "_last_completed",
                 "_last_tick", "_max_queue_s", "_min_limit", "_per_client", "_queue", "_retry_after", "_span_done",
                 "_span_s", "_waited", "adaptive", "expired", "in_flight", "in_service", "lag_ms", "limit", "peak",
                 "rate", "refused", "refused_client", "refused_queue")

    def __init__(self, cfg: AdmissionConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        cfg = cfg or AdmissionConfig()
        if cfg.max_in_flight < 0:
            raise ValueError("max_in_flight must be >= 0")
        if cfg.max_per_client < 0:
            raise ValueError("max_per_client must be >= 0")
        if cfg.min_concurrency < 1 or cfg.max_concurrency < 0 or cfg.max_queue_ms < 0 or cfg.lag_target_ms <= 0:
            raise ValueError("min_concurrency must be >= 1, max_concurrency >= 0, max_queue_ms >= 0, lag_target_ms > 0")
        self._clock = clock or time.monotonic  # the loop's clock (uvloop's is monotonic too)
        self._cap = cfg.max_in_flight
        self.adaptive = cfg.adaptive
        ceiling = self._ceiling = min(cfg.max_concurrency or MAX_LIMIT, cfg.max_in_flight or MAX_LIMIT)
        self._min_limit = min(cfg.min_concurrency, ceiling)
        self._lag_target = cfg.lag_target_ms
        self._max_queue_s = cfg.max_queue_ms / 1000.0
        self._per_client = cfg.max_per_client
        self._by_client: dict[str, int] = {}
        self._queue: deque[_Waiter] = deque()
        self._retry_after = str(max(0, cfg.retry_after_s))
        # Starts open: a normal load never waits for the limit to learn; the first lagging samples
        # bring it down within a few hundred milliseconds.
        self.limit = ceiling
        self.in_flight = 0  # worked on + waiting
        self.in_service = 0  # worked on
        self.peak = 0
        self.rate = 0.0  # requests finished per second while some waited (EWMA); 0 until measured
        self.lag_ms = 0.0
        self._completed = 0
        self._last_completed = 0
        self._last_tick: float | None = None
        self._waited = False  # a request waited since the last sample
        self._span_done = 0  # completions and seconds measured before the rate's first figure
        self._span_s = 0.0
        # Counters for metrics: the worker was full / one client was / the wait would be (or was) too long.
        self.refused = 0
        self.refused_client = 0
        self.refused_queue = 0
        self.expired = 0  # of refused_queue: refused after waiting max_queue_ms

    @property
    def max_in_flight(self) -> int:
        return self._cap

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ entering and leaving

    def _take(self, host: str | None) -> bool:
        """Count an arrival against the worker's and its client's bounds; False (nothing taken) past them."""
        if self._cap and self.in_flight >= self._cap:
            self.refused += 1
            return False
        if self._per_client and host is not None:
            n = self._by_client.get(host, 0)
            if n >= self._per_client:
                self.refused_client += 1
                return False
            self._by_client[host] = n + 1
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return True

    def _give_back(self, host: str | None) -> None:
        self.in_flight -= 1
        if self._per_client and host is not None:
            n = self._by_client.pop(host, 0) - 1
            if n > 0:
                self._by_client[host] = n

    def try_enter(self, host: str | None = None) -> bool:
        """A slot now or False (nothing taken): never waits. `host` is the client's address
        (`client_host(scope.client)`)."""
        if self.in_service >= self.limit or self._queue:
            self.refused += 1
            return False
        if not self._take(host):
            return False
        self.in_service += 1
        return True

    def enter(self, host: str | None = None) -> bool | asyncio.Future[bool]:
        """True: a slot, go. False: refused (nothing taken), answer `refusal()` at once. A future: wait
        for it with `wait()`; it says True (a slot was handed over) or False (refused after waiting)."""
        if self.in_service < self.limit and not self._queue:
            if not self._take(host):
                return False
            self.in_service += 1
            return True
        if not self.adaptive:
            self.refused += 1
            return False
        # Expected wait: the requests ahead of this one over the rate slots free up. Unknown (no
        # completion measured yet) waits; the waiter's own deadline still holds.
        if self._max_queue_s and self.rate > 0 and (len(self._queue) + 1) / self.rate > self._max_queue_s:
            self.refused_queue += 1
            return False
        if not self._take(host):
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiter(self._clock(), fut, host))
        self._waited = True
        return fut

    async def wait(self, fut: asyncio.Future[bool], host: str | None = None) -> bool:
        """Await a future from `enter()`. A cancelled waiter gives back what it took, a slot too if one
        was handed over just before the cancellation."""
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                for w in self._queue:
                    if w.fut is fut:
                        self._queue.remove(w)
                        break
                self._give_back(host)
            elif fut.result():
                self.leave(host)
            raise

    def leave(self, host: str | None = None) -> None:
        """Give back the slot of a request that was admitted (True from `enter()` or from `wait()`)."""
        if self.in_service <= 0 or self.in_flight <= 0:
            raise RuntimeError("Admission.leave() without a matching enter()")
        self._completed += 1
        self._give_back(host)
        self.in_service -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Free slots to the oldest waiters (the slot passes on: in_service counts it throughout)."""
        q = self._queue
        while q and self.in_service < self.limit:
            w = q.popleft()
            if w.fut.done():  # cancelled, already given back in wait()
                continue
            self.in_service += 1
            w.fut.set_result(True)

    # ------------------------------------------------------------------ the control loop

    def tick(self, now: float, lag_ms: float, cpu: float = 1.0) -> None:
        """One loop-lag sample (gateway/worker/loadmon.py, every 20 ms): the completion rate, the
        limit, and the waiters past their deadline. `cpu` is the process's CPU seconds per second:
        a loop that lags while the process hardly runs waits for a neighbour's CPU, not for its own
        work, and fewer requests at once would not help it."""
        self.lag_ms = lag_ms
        last = self._last_tick
        self._last_tick = now
        # The rate slots free up at when they are all taken: measured only over samples with requests
        # waiting (a light load's completions say how much was asked, not how fast it could go).
        # Over about a second: completions come in lumps when the upstream's answers do.
        if last is not None and now > last and self._waited:
            done, dt = self._completed - self._last_completed, now - last
            if self.rate == 0:  # the first figure: a plain average over half a time constant
                self._span_done += done
                self._span_s += dt
                if self._span_s >= _RATE_TAU_S / 2:
                    self.rate = self._span_done / self._span_s
            else:
                weight = 1.0 - math.exp(-dt / _RATE_TAU_S)
                self.rate = (1 - weight) * self.rate + weight * done / dt
        self._last_completed = self._completed
        self._waited = bool(self._queue)
        if not self.adaptive:
            return
        ceiling = self._ceiling
        if lag_ms > self._lag_target and cpu >= _CPU_BOUND:
            # Past the target the loop is the queue: fewer requests worked on at once, from what is
            # actually in service (a limit far above it would take many samples to matter).
            self.limit = max(self._min_limit, int(min(self.limit, self.in_service) * _DECREASE))
        elif self._queue:
            self.limit = min(ceiling, int(self.limit * _INCREASE) + 1)
            self._hand_over()
        if self._max_queue_s:
            deadline = now - self._max_queue_s
            q = self._queue
            while q and q[0].since <= deadline:
                w = q.popleft()
                if w.fut.done():
                    continue
                self._give_back(w.host)
                self.refused_queue += 1
                self.expired += 1
                w.fut.set_result(False)

    def clients(self) -> int:
        """Client addresses with a request in flight (tracked only with max_per_client)."""
        return len(self._by_client)

    def refusal(self) -> Overloaded:
        """The error to answer a refused request with (503, the caller's shape, `retry-after`)."""
        return Overloaded(
            "The gateway is at capacity on this worker; retry shortly.",
            headers={"retry-after": self._retry_after},
        )
