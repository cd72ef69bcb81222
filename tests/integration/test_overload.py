"""A real gateway (one Granian worker) in front of a slow mock, past its admission: the excess is
refused at once with 503 + retry-after, what is served waited at most `max_queue_ms`, and a closed
population under the in-flight bound waits its turn instead of being refused.

The concurrency limit is fixed (min_concurrency = max_concurrency), so the figures follow from the
settings alone: 5 requests worked on at once, 200 ms each, so slots free at 25 per second.
Granian's backpressure counts connections (idle keep-alive ones too): the last test shows that idle
connections past twice the in-flight bound do not hold up a new one (gateway/server.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, start_process

MOCK_MS = 200
SLOTS = 5  # min_concurrency = max_concurrency: the limit
CAP = 40  # max_in_flight: worked on + waiting
MAX_QUEUE_MS = 800
BURST = 50
BODY = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("overload")
    mock = start_process(["mock", "--latency-ms", str(MOCK_MS)], tmp / "mock.log")
    env = {
        "GATEWAY_RESILIENCE__ADMISSION__MAX_IN_FLIGHT": str(CAP),
        "GATEWAY_RESILIENCE__ADMISSION__MIN_CONCURRENCY": str(SLOTS),
        "GATEWAY_RESILIENCE__ADMISSION__MAX_CONCURRENCY": str(SLOTS),
        "GATEWAY_RESILIENCE__ADMISSION__MAX_QUEUE_MS": str(MAX_QUEUE_MS),
        "GATEWAY_STORE__EMBEDDED_PATH": str(tmp / "store.db"),
        "GATEWAY_LOG_LEVEL": "warning",
    }
    gw = start_process(["serve", "--upstream", mock.url, "--workers", "1"], tmp / "gateway.log", env=env,
                       ready_path="/readyz")
    yield gw
    gw.stop()
    mock.stop()


async def _call(session: aiohttp.ClientSession, url: str, i: int) -> tuple[int, float, str | None]:
    t0 = time.monotonic()
    body = {**BODY, "messages": [{"role": "user", "content": f"hello {i}"}]}
    async with session.post(url, json=body) as resp:
        await resp.read()
        return resp.status, (time.monotonic() - t0) * 1000.0, resp.headers.get("retry-after")


async def _settle(session: aiohttp.ClientSession, url: str) -> None:
    """A few calls one after another: connections to the upstream are open."""
    for i in range(4):
        status, _, _ = await _call(session, url, -i)
        assert status == 200


async def test_a_burst_past_the_bound_is_refused_at_once_and_the_served_waited_at_most_max_queue(
        gateway: Proc) -> None:
    url = gateway.url + "/v1/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await _settle(session, url)
        first = await asyncio.gather(*(_call(session, url, i) for i in range(BURST)))
        # Now the worker knows how fast slots free up (25 a second): arrivals that would wait past
        # 800 ms are refused as they come, not at their deadline.
        second = await asyncio.gather(*(_call(session, url, 1000 + i) for i in range(BURST)))
    for results in (first, second):
        served = [ms for status, ms, _ in results if status == 200]
        shed = [(ms, ra) for status, ms, ra in results if status == 503]
        assert len(served) + len(shed) == BURST  # nothing else: no 500, no timeout
        assert all(ra == "1" for _, ra in shed)
        # 50 arrivals at once, 40 fit in the worker, 25 slots a second: 5 at once and 20 more within
        # the 800 ms a wait may take are served, the others refused.
        assert 10 <= len(served) <= 30
        # Five at a time (the limit), the others waited for a slot instead of being refused ...
        assert sum(ms < 1.5 * MOCK_MS for ms in served) <= SLOTS
        assert sum(ms > 2 * MOCK_MS for ms in served) >= SLOTS
        # ... at most max_queue_ms (the 35 that fit would take 1.4 s at 25 a second); slack for a
        # shared machine.
        assert max(served) < MAX_QUEUE_MS + MOCK_MS + 300
        # Refused at once, sooner than one upstream call takes, except those that waited until
        # their deadline (never later).
        assert sum(ms < MOCK_MS for ms, _ in shed) >= BURST - CAP
        assert max(ms for ms, _ in shed) < MAX_QUEUE_MS + 400
    second_shed = [ms for status, ms, _ in second if status == 503]
    assert sum(ms < MOCK_MS for ms in second_shed) >= len(second_shed) - 3


async def test_a_closed_population_under_the_bound_waits_its_turn_and_is_never_refused(gateway: Proc) -> None:
    url = gateway.url + "/v1/chat/completions"
    clients, rounds = 12, 4  # 12 in the worker at most, 5 worked on: the other 7 wait about 0.3 s

    async def client(c: int, session: aiohttp.ClientSession) -> list[tuple[int, float, str | None]]:
        return [await _call(session, url, c * 100 + r) for r in range(rounds)]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await _settle(session, url)
        per_client = await asyncio.gather(*(client(c, session) for c in range(clients)))
    results = [r for rs in per_client for r in rs]
    assert [status for status, _, _ in results] == [200] * (clients * rounds)
    # Waiting in arrival order: nobody's wait ran past a few slot turns.
    assert max(ms for _, ms, _ in results) < MAX_QUEUE_MS + MOCK_MS


@pytest.fixture(scope="module")
def fast_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("connections")
    mock = start_process(["mock", "--latency-ms", "5"], tmp / "mock.log")
    env = {"GATEWAY_RESILIENCE__ADMISSION__MAX_IN_FLIGHT": "30", "GATEWAY_STORE__EMBEDDED_PATH": str(tmp / "store.db"),
           "GATEWAY_LOG_LEVEL": "warning"}
    gw = start_process(["serve", "--upstream", mock.url, "--workers", "1"], tmp / "gateway.log", env=env,
                       ready_path="/readyz")
    yield gw
    gw.stop()
    mock.stop()


async def test_idle_keep_alive_connections_past_the_bound_do_not_hold_up_a_new_one(fast_gateway: Proc) -> None:
    """Granian's backpressure counts connections: at 2 x max_in_flight (60 here) a new connection
    waited 4.4 s for an idle one to time out. The worker's bound is on requests, not connections."""
    url = fast_gateway.url + "/v1/chat/completions"
    idle = [aiohttp.ClientSession() for _ in range(100)]
    try:
        waits = []
        for i, session in enumerate(idle):  # one request each (5 ms), then the connection stays open, idle
            status, ms, _ = await _call(session, url, 5000 + i)
            assert status == 200
            waits.append(ms)
        async with aiohttp.ClientSession() as fresh:
            status, ms, _ = await _call(fresh, url, 6000)
        waits.append(ms)
        assert status == 200
        assert max(waits) < 1000, max(waits)  # not the header timeout's 5 s
    finally:
        for session in idle:
            await session.close()
