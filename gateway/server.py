"""Launching Granian: workers from the container's CPU quota, RSGI interface, uvloop."""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup (v2 cpu.max or v1 cfs quota/period), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def default_workers() -> int:
    """One worker per CPU the container may use (not the host's core count)."""
    quota = cgroup_cpu_quota()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if quota is not None:
        return max(1, min(cores, math.ceil(quota)))
    return max(1, cores)


# Granian's Rust side allocates with its own jemalloc (read request bodies among others), which
# keeps freed pages for 10 s and purges them only when that arena is used again. Its background
# purging thread does not help: jemalloc turns it off in forked children, and Granian's workers are
# forked. So a burst of 20 MB bodies left a worker 20-90 MB larger until traffic came back.
# Allocations of 256 KB and more (body buffers) now go to jemalloc's arena for huge allocations,
# which purges at once; small ones keep the default, so ordinary requests pay nothing (purging
# everything at once cost ~1 madvise per request and ~15% CPU). 20 bodies of 20 MB now leave a
# worker within 3 MB (tests/faults/test_hostile.py). An operator's own setting wins. The variable is
# read when the extension is loaded: set it before importing granian.
JEMALLOC_CONF = "oversize_threshold:262144"


def jemalloc_conf(environ: dict[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    env.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)


CONNECTIONS_PER_SLOT = 8  # Granian's connection bound per worker, per request of max_in_flight


def backpressure_for(max_in_flight: int) -> int | None:
    """Granian's per-worker connection bound for an in-flight bound (None: Granian's default)."""
    return max(CONNECTIONS_PER_SLOT * max_in_flight, 512) if max_in_flight else None


def serve(host: str, port: int, workers: int, drain_timeout_s: float, log_level: str = "warning", *,
          header_timeout_ms: int = 5000, max_in_flight: int = 1024) -> None:
    jemalloc_conf()
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    server = Server(
        "gateway.app:app",
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=2048,
        log_level=log_level,  # type: ignore[arg-type]
        workers_kill_timeout=int(drain_timeout_s) + 1,
        respawn_failed_workers=True,
        # A client has this long to send its request headers once it started (slowloris connections
        # are closed). Granian's backpressure counts connections, idle keep-alive ones included: past
        # it a new connection waits until an idle one closes (measured: 4.4 s, the header timeout).
        # So it sits far above the in-flight bound, and the worker's own admission answers the
        # excess requests at once instead of Granian holding their connections.
        http1_settings=HTTP1Settings(header_read_timeout=header_timeout_ms),
        backpressure=backpressure_for(max_in_flight),
    )
    server.serve()


def serve_mock(host: str, port: int, workers: int) -> None:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    server = Server("gateway.mock.main:app", address=host, port=port, interface=Interfaces.RSGI,
                    workers=workers, loop=Loops.uvloop, backlog=2048, log_level="warning")  # type: ignore[arg-type]
    server.serve()
