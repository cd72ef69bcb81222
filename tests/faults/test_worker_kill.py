"""A worker SIGKILLed under load: its in-flight requests may fail, nothing else does, and Granian
respawns it within seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from .conftest import AUTH, FULL, Stack, chat, form, record
from .load import Outcome, open_loop, pct, post, session, wait_until


async def test_a_killed_worker_fails_almost_nothing_and_comes_back(stack: Stack) -> None:
    url = stack.gw.url + "/v1/chat/completions"
    rate, seconds = form(150, 200), form(8, 20)
    workers = stack.workers
    assert len(workers) == 2

    def ask(s: aiohttp.ClientSession, i: int) -> Coroutine[Any, Any, Outcome]:
        return post(s, url, chat(i), AUTH, deadline_s=10)

    async def kill() -> float | None:
        await asyncio.sleep(seconds / 3)
        os.kill(workers[0], signal.SIGKILL)

        async def respawned() -> bool:
            now = stack.workers
            return len(now) == 2 and workers[0] not in now

        return await wait_until(respawned, 20.0, every_s=0.05)

    async with session() as s:
        t0 = time.monotonic()
        results, back_s = await asyncio.gather(open_loop(s, rate, seconds, ask), kill())
    failed = [o for o in results if not o.ok]
    record("worker SIGKILL", rate=f"{rate}/s", requests=len(results), failed=len(failed),
           failed_share=f"{len(failed) / len(results):.3%}", kinds=sorted({o.error or str(o.status) for o in failed}),
           respawned_after_s=back_s, p99_ms=round(pct([o.ms for o in results], 99), 1),
           seconds=round(time.monotonic() - t0, 1))
    assert back_s is not None
    # What fails is what that worker had in flight (about rate x latency / workers: 1-3 requests)
    # and the client's idle keep-alive connections to it, which break at their next use (a few more
    # on a loaded machine: 4 seen in CI). A fixed count, so the share falls with the run's length:
    # under 0.1% from the full form's 4,000 requests on.
    assert len(failed) / len(results) < 0.001 if FULL else len(failed) <= 8
