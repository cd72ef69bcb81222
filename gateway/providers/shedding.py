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
    max_in_flight: int = 1024  # per worker; 0 = no bound (Little: about capacity x the latency one accepts)
    retry_after_s: int = 1  # what the refusal tells the client to wait
    # Per worker and client address; 0 = no bound. Off by default: behind a load balancer or an
    # ingress every request comes from the proxy's address (cap connections there instead).
    max_per_client: int = 0


def client_host(client: str) -> str:
    """The address part of an RSGI `scope.client` ("10.0.0.7:51234", "[::1]:51234")."""
    if client.startswith("["):
        return client[1:].split("]", 1)[0]
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else client


class Admission:
    """The worker's in-flight counter. `try_enter(host)` before any work, `leave(host)` in the `finally`.

    Only the event loop thread touches it (one worker = one loop), so plain integers suffice. The
    per-client counts hold only addresses with a request in flight, so they stay as small as the load.
    """

    __slots__ = ("_by_client", "_limit", "_per_client", "_retry_after", "in_flight", "peak", "refused",
                 "refused_client")

    def __init__(self, cfg: AdmissionConfig | None = None) -> None:
        cfg = cfg or AdmissionConfig()
        if cfg.max_in_flight < 0:
            raise ValueError("max_in_flight must be >= 0")
        if cfg.max_per_client < 0:
            raise ValueError("max_per_client must be >= 0")
        self._limit = cfg.max_in_flight
        self._per_client = cfg.max_per_client
        self._by_client: dict[str, int] = {}
        self._retry_after = str(max(0, cfg.retry_after_s))
        self.in_flight = 0
        self.peak = 0
        self.refused = 0  # counters for metrics: the worker was full / one client was
        self.refused_client = 0

    @property
    def limit(self) -> int:
        return self._limit

    def try_enter(self, host: str | None = None) -> bool:
        """Take a slot; False (and nothing taken) when the worker, or this client, is full: answer
        `refusal()` at once. `host` is the client's address (`client_host(scope.client)`)."""
        if self._limit and self.in_flight >= self._limit:
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

    def leave(self, host: str | None = None) -> None:
        """Give back the slot taken by a `try_enter()` (same `host`) that returned True."""
        if self.in_flight <= 0:
            raise RuntimeError("Admission.leave() without a matching try_enter()")
        self.in_flight -= 1
        if self._per_client and host is not None:
            n = self._by_client.pop(host, 0) - 1
            if n > 0:
                self._by_client[host] = n

    def clients(self) -> int:
        """Client addresses with a request in flight (tracked only with max_per_client)."""
        return len(self._by_client)

    def refusal(self) -> Overloaded:
        """The error to answer a refused request with (503, the caller's shape, `retry-after`)."""
        return Overloaded(
            f"The gateway is at capacity ({self._limit} requests in flight on this worker); retry shortly.",
            headers={"retry-after": self._retry_after},
        )
