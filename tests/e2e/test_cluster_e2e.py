"""Two gateway instances (Granian, 2 workers each) on one local Redis Cluster (3 masters, 3 replicas):
the cache, limits and virtual keys are shared across instances exactly as on one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisClusterNodes, free_port, own_redis_cluster

from .conftest import API_KEY, MASTER_KEY, Proc, start_mock, start_process, write_config
from .test_governance_limits import GOVERNANCE, _fire, admin, assert_refused_a_second_after, chat_body, new_key


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    yield from own_redis_cluster()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, cluster: RedisClusterNodes) -> Iterator[tuple[Proc, Proc]]:
    tmp: Path = tmp_path_factory.mktemp("cluster-e2e")
    mock = start_mock(tmp, "mock")
    env = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret", "GATEWAY_MASTER_KEY": MASTER_KEY,
           "GATEWAY_REDIS_URL": cluster.url}
    gws = []
    try:
        for name in ("gw-a", "gw-b"):
            cfg = write_config(tmp / f"{name}.yaml", mock, free_port(), mock, extra={"governance": GOVERNANCE})
            gws.append(start_process(["serve", "--config", str(cfg), "--workers", "2"], tmp / f"{name}.log",
                                     env=env, ready_path="/readyz"))
        yield gws[0], gws[1]
    finally:
        for p in [*gws, mock]:
            p.stop()


def _chat(gw: Proc, text: str, key: str = API_KEY) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=chat_body(text, temperature=0),
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_an_answer_cached_by_one_instance_is_a_hit_on_the_other(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    first = _chat(a, "What is the tallest mountain in Europe?")
    assert first.status_code == 200 and first.headers.get("x-cache-hit") != "true"
    deadline = time.monotonic() + 5  # the write-back runs after the answer: poll for it
    while (hit := _chat(b, "What is the tallest mountain in Europe?")).headers.get("x-cache-hit") != "true":
        assert time.monotonic() < deadline, "no hit on the other instance"
    assert hit.json()["choices"] == first.json()["choices"]


def test_rpm_holds_across_instances_on_the_cluster(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    key = new_key(a, rpm=100)["key"]
    responses = asyncio.run(_fire([a.url, b.url], key, 160))
    assert sum(r.status_code == 200 for r in responses) == 100
    assert {r.status_code for r in responses} == {200, 429}


def test_a_revoked_key_is_refused_on_the_other_instance_within_a_second(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    created = new_key(a)
    for gw in (a, b, b, b):
        assert _chat(gw, "hi", created["key"]).status_code == 200
    admin(a, "POST", "/admin/keys/revoke", {"id": created["id"]})
    assert_refused_a_second_after(lambda: _chat(b, "hi", created["key"]))
