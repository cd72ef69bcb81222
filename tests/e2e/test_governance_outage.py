"""A Redis outage under real gateway instances: limits fail open (counted, logged once per worker)
unless the operator chose fail-closed; once Redis is back, limits hold again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, free_port, own_redis_server

from .conftest import API_KEY, MASTER_KEY, Proc, start_mock, start_process, write_config


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    yield from own_redis_server("gw-redis-outage-")


def _gateway(tmp: Path, name: str, mock: Proc, redis_url: str, rule: str, rpm: int) -> Proc:
    cfg = write_config(tmp / f"{name}.yaml", mock, free_port(), mock, extra={
        "governance": {"store_failure": rule, "keys": {"team-a": {"rpm": rpm}}}})
    env = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "up", "GATEWAY_MASTER_KEY": MASTER_KEY,
           "GATEWAY_REDIS_URL": redis_url}
    return start_process(["serve", "--config", str(cfg), "--workers", "2"], tmp / f"{name}.log", env=env,
                         ready_path="/readyz")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("gov-outage")
    mock = start_mock(tmp, "mock")
    fail_open = _gateway(tmp, "open", mock, own_redis.url, "open", 3)
    fail_closed = _gateway(tmp, "closed", mock, own_redis.url, "closed", 1000)
    yield fail_open, fail_closed
    fail_open.stop()
    fail_closed.stop()
    mock.stop()


def _chat(gw: Proc) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {API_KEY}"},
                      timeout=10)
    return resp.status_code


def test_store_outage_fails_open_unless_closed(gateways: tuple[Proc, Proc], own_redis: RedisServer) -> None:
    fail_open, fail_closed = gateways
    assert [_chat(fail_open) for _ in range(4)] == [200, 200, 200, 429]
    own_redis.stop()
    try:
        assert [_chat(fail_open) for _ in range(6)] == [200] * 6  # over the limit, but the store is away
        assert _chat(fail_closed) == 503
        bypassed = 0
        for _ in range(10):  # two workers, each with its own count
            status = httpx.get(fail_open.url + "/admin/governance",
                               headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
            bypassed = max(bypassed, status["limits"]["bypassed"])
            assert status["limits"]["store_failure"] == "open"
        assert bypassed >= 3
        logged = fail_open.log.read_text().count("limits_bypassed_store_unavailable")
        assert 1 <= logged <= 2  # once per worker per outage, not once per request
    finally:
        own_redis.start()
    deadline = time.monotonic() + 10
    statuses: list[int] = []
    while time.monotonic() < deadline:  # the breaker probes again within seconds; the empty Redis counts anew
        statuses.append(_chat(fail_open))
        if statuses[-1] == 429:
            break
        time.sleep(0.1)
    assert statuses[-1] == 429
    assert _chat(fail_closed) == 200
