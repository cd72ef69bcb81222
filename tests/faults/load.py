"""The fault suite's instruments: an open-loop async load generator, percentiles, worker RSS from /proc.

Open loop: requests leave at a fixed rate whether or not earlier ones came back (a closed loop
slows down with the server and hides its stalls). Every request has a deadline; one that has no
answer by then counts as hung.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


@dataclass
class Outcome:
    sent: float  # monotonic time the request left
    ms: float  # until the whole answer was read (or the failure)
    status: int  # 0: no HTTP answer (connection error or deadline)
    error: str = ""  # the exception's name when there was no answer; "hung" past the deadline
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200


Request = Callable[[aiohttp.ClientSession, int], Coroutine[Any, Any, Outcome]]


def session(limit: int = 0) -> aiohttp.ClientSession:
    """A client session without a connection cap (limit 0) and without the environment's proxies."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False), trust_env=False)


async def post(s: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None,
               deadline_s: float = 10.0, keep_body: bool = False) -> Outcome:
    t0 = time.monotonic()
    data: bytes | io.BytesIO = body if isinstance(body, bytes) else json.dumps(body).encode()
    if len(data) > 1 << 20:
        data = io.BytesIO(data)  # aiohttp streams a file-like body instead of holding the loop
    hdrs = {"content-type": "application/json", **(headers or {})}
    try:
        async with asyncio.timeout(deadline_s):
            async with s.post(url, data=data, headers=hdrs) as resp:
                raw = await resp.read()
                return Outcome(t0, (time.monotonic() - t0) * 1000.0, resp.status, "",
                               {k.lower(): v for k, v in resp.headers.items()}, raw if keep_body or resp.status != 200
                               else b"")
    except TimeoutError:
        return Outcome(t0, (time.monotonic() - t0) * 1000.0, 0, "hung")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(t0, (time.monotonic() - t0) * 1000.0, 0, type(exc).__name__)


async def open_loop(s: aiohttp.ClientSession, rate: float, seconds: float, request: Request,
                    stop: asyncio.Event | None = None) -> list[Outcome]:
    """Send `request(session, i)` `rate` times a second for `seconds` (or until `stop` is set), then
    wait for every answer. The schedule is absolute, so a slow loop iteration does not lower the rate."""
    tasks: list[asyncio.Task[Outcome]] = []
    start = time.monotonic()
    n = math.floor(rate * seconds)
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(request(s, i)))
    return list(await asyncio.gather(*tasks))


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))]


# -- processes --------------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Direct children of `pid` (Granian's workers are the children of the `gateway serve` process)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers_rss_kb(main_pid: int) -> int:
    """The resident memory of every worker process, summed."""
    total = 0
    for pid in children(main_pid):
        try:
            total += rss_kb(pid)
        except OSError:
            continue  # a worker that just went away
    return total


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.02) -> float | None:
    """Poll `check` until it is true; the seconds it took, or None past `timeout_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await check():
            return time.monotonic() - t0
        await asyncio.sleep(every_s)
    return None
