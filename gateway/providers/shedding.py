"""Overload shedding: a bound on the requests one worker has in flight, refused at once past it.

A queue that grows past the clients' deadlines helps nobody: every waiting request burns the
time its client would have spent going elsewhere. So past `max_in_flight` the worker answers at
once with 503 + `retry-after` (the `Overloaded` error) instead of accepting more work.

The default, 512 per worker, comes from the bench (benchmarks/results/2026-11-23-vm.md, 60 ms
mock upstream, one worker per core): 300 connections in flight ran at 3,372 RPS with p99 133 ms,
1,000 connections added only queueing (same RPS, p50 312 ms). 512 sits past the knee with room for
slower upstreams, whose requests hold a slot longer but cost no more CPU.
"""

from __future__ import annotations

import msgspec

from gateway.errors import Overloaded


class AdmissionConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_in_flight: int = 512  # per worker; 0 = no bound
    retry_after_s: int = 1  # what the refusal tells the client to wait


class Admission:
    """The worker's in-flight counter. `try_enter()` before any work, `leave()` in the `finally`.

    Only the event loop thread touches it (one worker = one loop), so plain integers suffice.
    """

    __slots__ = ("_limit", "_retry_after", "in_flight", "peak", "refused")

    def __init__(self, cfg: AdmissionConfig | None = None) -> None:
        cfg = cfg or AdmissionConfig()
        if cfg.max_in_flight < 0:
            raise ValueError("max_in_flight must be >= 0")
        self._limit = cfg.max_in_flight
        self._retry_after = str(max(0, cfg.retry_after_s))
        self.in_flight = 0
        self.peak = 0
        self.refused = 0  # a counter for metrics

    @property
    def limit(self) -> int:
        return self._limit

    def try_enter(self) -> bool:
        """Take a slot; False (and nothing taken) when the worker is full: answer `refusal()` at once."""
        if self._limit and self.in_flight >= self._limit:
            self.refused += 1
            return False
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return True

    def leave(self) -> None:
        """Give back the slot taken by a `try_enter()` that returned True."""
        if self.in_flight <= 0:
            raise RuntimeError("Admission.leave() without a matching try_enter()")
        self.in_flight -= 1

    def refusal(self) -> Overloaded:
        """The error to answer a refused request with (503, the caller's shape, `retry-after`)."""
        return Overloaded(
            f"The gateway is at capacity ({self._limit} requests in flight on this worker); retry shortly.",
            headers={"retry-after": self._retry_after},
        )
