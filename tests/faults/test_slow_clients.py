"""200 slowloris connections are closed within the header timeout; other clients do not notice."""

from __future__ import annotations

from benchmarks.faults.slowloris import run

from .conftest import HEADER_TIMEOUT_MS, Stack, form, record


async def test_slowloris_connections_are_closed_within_the_header_timeout(stack: Stack) -> None:
    timeout_s = HEADER_TIMEOUT_MS / 1000.0
    out = await run("127.0.0.1", stack.gw.port, 200, form(timeout_s + 3, timeout_s + 8))
    loris, normal = out["slowloris"], out["normal_client"]
    record("slowloris", connections=loris["connections"], closed=loris["closed"],
           closed_after_s=loris["closed_after_s"], header_timeout_s=timeout_s,
           normal_requests=normal["requests"], normal_p50_ms=normal["p50_ms"], normal_max_ms=normal["max_ms"])
    assert loris["closed"] == 200
    assert loris["closed_after_s"][1] <= timeout_s + 1.5  # the timer, plus one 100 ms byte and a loaded machine
    assert normal["requests"] >= 20 and normal["max_ms"] < 500
