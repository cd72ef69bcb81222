"""Single flight: one upstream call for many identical concurrent misses."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.singleflight import SingleFlight


async def test_twenty_concurrent_callers_run_the_factory_once() -> None:
    flight, calls = SingleFlight(), 0

    async def upstream() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"answer"

    results = await asyncio.gather(*(flight.run("k", upstream) for _ in range(20)))
    assert calls == 1 and results == [b"answer"] * 20
    assert (flight.stats.leaders, flight.stats.followers) == (1, 19)
    assert await flight.run("k", upstream) == b"answer" and calls == 2  # the flight landed: a new one


async def test_run_shares_the_exception() -> None:
    flight = SingleFlight()

    async def broken() -> bytes:
        await asyncio.sleep(0.01)
        raise RuntimeError("upstream down")

    results = await asyncio.gather(*(flight.run("k", broken) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_acquire_hands_the_published_answer_to_followers() -> None:
    flight, upstream_calls = SingleFlight(), 0

    async def handle() -> bytes:
        nonlocal upstream_calls
        async with flight.acquire("k") as slot:
            if slot.leader:
                upstream_calls += 1
                await asyncio.sleep(0.05)
                slot.publish(b"body")
                return b"body"
            assert slot.result is not None
            return slot.result

    assert await asyncio.gather(*(handle() for _ in range(20))) == [b"body"] * 20
    assert upstream_calls == 1 and flight.stats.served == 19 and len(flight) == 0


async def test_followers_get_none_when_the_leader_fails_or_is_slow() -> None:
    flight = SingleFlight(wait_s=0.05)
    seen: list[bytes | None] = []
    # Events, not sleeps, order the two: the follower joins while the leader still holds the flight.
    led, joined = asyncio.Event(), asyncio.Event()

    async def leader() -> None:
        with pytest.raises(RuntimeError):
            async with flight.acquire("k") as slot:
                assert slot.leader
                led.set()
                await joined.wait()
                raise RuntimeError("boom")

    async def follower() -> None:
        await led.wait()
        joined.set()  # no await between this and acquire(): the follower is registered first
        async with flight.acquire("k") as slot:
            assert not slot.leader
            seen.append(slot.result)

    await asyncio.gather(leader(), follower())
    assert seen == [None]

    slow_led = asyncio.Event()

    async def slow_leader() -> None:
        async with flight.acquire("slow") as slot:
            slow_led.set()
            await asyncio.sleep(0.2)
            slot.publish(b"late")

    async def impatient() -> None:
        await slow_led.wait()
        async with flight.acquire("slow") as slot:
            seen.append(slot.result)

    await asyncio.gather(slow_leader(), impatient())
    assert seen == [None, None] and flight.stats.timeouts == 1
