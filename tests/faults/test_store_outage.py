"""Redis SIGKILLed under load and restarted empty: nothing fails, and the cache and the limits come back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from .conftest import AUTH, LIMITED_KEY, Stack, chat, form, record
from .load import Outcome, open_loop, pct, post, session, wait_until


async def test_redis_killed_and_restarted_under_load(stack: Stack) -> None:
    url = stack.gw.url + "/v1/chat/completions"
    rate, seconds = form(50, 100), form(6, 20)
    limited = {"authorization": f"Bearer {LIMITED_KEY}"}

    def mixed(s: aiohttp.ClientSession, i: int) -> Coroutine[Any, Any, Outcome]:
        # Half repeated questions (cache hits), half unique ones (upstream calls).
        return post(s, url, chat(i % 20 if i % 2 else 10_000 + i, cacheable=bool(i % 2)), AUTH, deadline_s=10)

    async with session() as s:
        assert [(await post(s, url, chat(0), limited)).status for _ in range(6)][-1] == 429  # limits hold

        async def outage() -> tuple[float, float, float]:
            await asyncio.sleep(seconds / 3)
            stack.redis.proc.kill()  # SIGKILL: no goodbye to the clients
            stack.redis.proc.wait(10)
            await asyncio.sleep(seconds / 3)
            stack.redis.start()  # the same port, empty
            restarted = time.monotonic()
            cache_s, limits_s = await back(s)
            return restarted, cache_s, limits_s

        async def back(s: aiohttp.ClientSession) -> tuple[float, float]:
            """Seconds since the restart until a new answer is cached in Redis and served from it,
            and until the limited key is refused again (the empty Redis counts anew)."""
            r = aioredis.Redis(port=stack.redis.port)
            n = [0]

            async def cache_back() -> bool:
                n[0] += 1
                body = chat(50_000 + n[0], cacheable=True)
                await post(s, url, body, AUTH)
                repeat = await post(s, url, body, AUTH)
                return repeat.headers.get("x-cache-hit") == "true" and bool(await r.keys("gw:c:*"))

            async def limits_back() -> bool:
                return (await post(s, url, chat(1), limited)).status == 429

            try:
                cache_s, limits_s = await asyncio.gather(wait_until(cache_back, 10.0, every_s=0.05),
                                                         wait_until(limits_back, 10.0, every_s=0.05))
            finally:
                await r.aclose()
            assert cache_s is not None and limits_s is not None, (cache_s, limits_s)
            return cache_s, limits_s

        results, (restarted, cache_s, limits_s) = await asyncio.gather(open_loop(s, rate, seconds, mixed), outage())
    failed = [o for o in results if not o.ok]
    during = [o for o in results if restarted - seconds / 3 <= o.sent < restarted]
    hits = sum(o.headers.get("x-cache-hit") == "true" for o in during if o.ok)
    record("redis kill + restart", rate=f"{rate}/s", requests=len(results), failed=len(failed),
           p50_ms=round(pct([o.ms for o in results], 50), 1), p99_ms=round(pct([o.ms for o in results], 99), 1),
           max_ms=round(max(o.ms for o in results)), hits_during_outage=f"{hits}/{len(during)}",
           cache_back_s=round(cache_s, 2), limits_back_s=round(limits_s, 2))
    assert failed == [], [(o.status, o.error) for o in failed][:5]
    assert cache_s <= 2.0
    assert limits_s <= 2.0
