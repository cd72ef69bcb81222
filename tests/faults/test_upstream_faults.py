"""Upstream faults: a 500 storm, a deployment that black-holes, clients that leave mid-stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from .conftest import AUTH, Stack, chat, form, record
from .load import Outcome, Request, open_loop, pct, post, session, wait_until

DEADLINE_S = 10.0  # the clients' deadline: an answer later than this is a hung request


async def test_a_500_storm_costs_one_upstream_call_per_request_and_recovers_at_once(stack: Stack) -> None:
    url = stack.gw.url + "/v1/chat/completions"
    rate, storm_s = form(40, 50), form(4, 10)

    def ask(s: aiohttp.ClientSession, i: int) -> Coroutine[Any, Any, Outcome]:
        return post(s, url, chat(i), AUTH, deadline_s=DEADLINE_S)

    async with session() as s:
        base = await open_loop(s, rate, form(2, 5), ask)
        assert [o.status for o in base if not o.ok] == []
        normal_p99 = pct([o.ms for o in base], 99)
        calls_before = stack.mock_stats(stack.mock)["requests"]
        stack.set_mock(stack.mock, error_rate=1.0, error_status=500)
        try:
            storm = await open_loop(s, rate, storm_s, ask)
        finally:
            stack.set_mock(stack.mock, error_rate=0.0)
        ended = time.monotonic()
        calls = stack.mock_stats(stack.mock)["requests"] - calls_before
        after = await open_loop(s, rate, form(3, 5), ask)
    hung = [o for o in storm + after if o.error == "hung"]
    failures = [o.ms for o in storm if not o.ok]
    late = [o for o in after if o.sent >= ended + 1.0]  # "within 1 s after"
    recovered_at = max((o.sent - ended for o in after if not o.ok), default=0.0)
    late_p99 = pct([o.ms for o in late], 99)
    record("upstream 500 storm", rate=f"{rate}/s", storm_s=storm_s, client_requests=len(storm),
           upstream_calls=calls, calls_per_request=round(calls / len(storm), 3), hung=len(hung),
           failure_p50_ms=round(pct(failures, 50), 1), failure_p99_ms=round(pct(failures, 99), 1),
           normal_p99_ms=round(normal_p99, 1), last_failure_after_end_s=round(recovered_at, 2),
           p99_from_1s_after_ms=round(late_p99, 1))
    assert calls / len(storm) <= 1.1
    assert hung == []
    assert {o.status for o in storm} <= {500, 502, 503}, {o.status for o in storm}
    assert late and all(o.ok for o in late), [(round(o.sent - ended, 2), o.status) for o in late if not o.ok][:5]
    assert late_p99 <= 2 * normal_p99 + 20


async def test_a_black_holed_deployment_is_ejected_and_its_fallback_keeps_its_latency(stack: Stack) -> None:
    url = stack.gw.url + "/v1/chat/completions"
    rate = form(40, 50)

    def ask(model: str) -> Request:
        def one(s: aiohttp.ClientSession, i: int) -> Coroutine[Any, Any, Outcome]:
            return post(s, url, chat(i, model=model), AUTH, deadline_s=DEADLINE_S)
        return one

    stack.set_mock(stack.hole, black_hole=True)
    try:
        async with session() as s:
            fallback = await open_loop(s, rate, form(3, 10), ask("gpt-4o-mini"))
            assert all(o.ok for o in fallback)
            # Enough requests in flight at once that every worker sees its breaker's 5 failures.
            opening = await open_loop(s, 20, 2, ask("bh"))
            assert all(o.ok for o in opening), {o.status for o in opening}  # answered by the fallback
            assert any(k.startswith("deployment hole") for k in stack.readyz()["degraded"]), stack.readyz()
            held = stack.mock_stats(stack.hole)["black_holed"]
            ejected = await open_loop(s, rate, form(3, 20), ask("bh"))
            probes = stack.mock_stats(stack.hole)["black_holed"] - held
    finally:
        stack.set_mock(stack.hole, black_hole=False)
    fb_p99, bh_p99 = pct([o.ms for o in fallback], 99), pct([o.ms for o in ejected], 99)
    record("black-holed deployment", rate=f"{rate}/s", opening_max_ms=round(max(o.ms for o in opening)),
           fallback_p99_ms=round(fb_p99, 1), ejected_p50_ms=round(pct([o.ms for o in ejected], 50), 1),
           ejected_p99_ms=round(bh_p99, 1), ejected_max_ms=round(max(o.ms for o in ejected)),
           requests=len(ejected), probes_to_the_hole=probes)
    assert all(o.ok for o in ejected), {o.status for o in ejected}
    assert bh_p99 < 2 * fb_p99
    assert probes <= 2 * len(stack.workers) * (1 + form(3, 20) // 5)  # only half-open probes reach it


async def test_clients_leaving_mid_stream_cancel_their_upstream_calls_within_a_chunk(stack: Stack) -> None:
    url = stack.gw.url + "/v1/chat/completions"
    n, pace_ms = 200, 200
    before = stack.mock_stats(stack.mock)

    async def leave_after_first_chunk(s: aiohttp.ClientSession, i: int) -> float:
        body = chat(i, stream=True, mock={"chunks": 20, "chunk_interval_ms": pace_ms})
        async with s.post(url, json=body, headers=AUTH) as resp:
            assert resp.status == 200
            line = await resp.content.readline()
            assert line.startswith(b"data: "), line
            t = time.monotonic()
            resp.close()  # the client goes away with 19 chunks to come
            return t

    async with session() as s:
        left = await asyncio.wait_for(asyncio.gather(*(leave_after_first_chunk(s, i) for i in range(n))), 60)

    async def all_cancelled() -> bool:
        return stack.mock_stats(stack.mock)["streams_cancelled"] - before["streams_cancelled"] >= n

    took = await wait_until(all_cancelled, 20.0)
    after = stack.mock_stats(stack.mock)
    record("client disconnects", streams=n, chunk_interval_ms=pace_ms,
           cancelled_upstream=after["streams_cancelled"] - before["streams_cancelled"],
           completed_upstream=after["streams_completed"] - before["streams_completed"],
           max_frames_sent_before_cancel=after["cancelled_max_frames"],
           all_seen_cancelled_after_last_leave_s=round(took or -1, 2),
           spread_of_leaving_s=round(max(left) - min(left), 2))
    assert took is not None
    assert after["streams_completed"] == before["streams_completed"]
    assert after["cancelled_max_frames"] <= 2  # the one the client read, and at most one more
