"""Limits, budgets and virtual keys across real gateway instances (Granian, 2 workers each).

Two instances share one real Redis; a third runs on the embedded store. Every test issues its own
virtual keys through the admin API, so tests don't share counters.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RedisServer, free_port

from .conftest import API_KEY, MASTER_KEY, Proc, start_mock, start_process, write_config

PRICE = 1000.0  # USD per million tokens for "gpt-4o-mini" here: a budget of cents lasts a few requests
GOVERNANCE = {
    "key_cache_ttl_s": 0.5,
    "prices": {"gpt-4o-mini": {"input_per_mtok": PRICE, "output_per_mtok": PRICE}},
    "teams": {"capped-team": {"rpm": 30}},
}


def _start_gateway(tmp: Path, name: str, mock: Proc, env: dict[str, str]) -> Proc:
    cfg = write_config(tmp / f"{name}.yaml", mock, free_port(), mock, extra={"governance": GOVERNANCE})
    full = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret", "GATEWAY_MASTER_KEY": MASTER_KEY,
            **env}
    return start_process(["serve", "--config", str(cfg), "--workers", "2"], tmp / f"{name}.log", env=full,
                         ready_path="/readyz")


@pytest.fixture(scope="module")
def gov_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gov-limits")


@pytest.fixture(scope="module")
def gov_mock(gov_tmp: Path) -> Iterator[Proc]:
    p = start_mock(gov_tmp, "mock")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def pair(gov_tmp: Path, gov_mock: Proc, redis_server: RedisServer) -> Iterator[tuple[Proc, Proc]]:
    redis_server.flush()
    a = _start_gateway(gov_tmp, "gw-a", gov_mock, {"GATEWAY_REDIS_URL": redis_server.url})
    b = _start_gateway(gov_tmp, "gw-b", gov_mock, {"GATEWAY_REDIS_URL": redis_server.url})
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def embedded(gov_tmp: Path, gov_mock: Proc) -> Iterator[Proc]:
    env = {"GATEWAY_STORE__EMBEDDED_PATH": str(gov_tmp / "store.db"), "GATEWAY_REDIS_URL": ""}
    p = _start_gateway(gov_tmp, "gw-embedded", gov_mock, env)
    yield p
    p.stop()


def admin(gw: Proc, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    resp = httpx.request(method, gw.url + path, json=body, headers={"authorization": f"Bearer {MASTER_KEY}"},
                         timeout=10)
    assert resp.status_code < 300, resp.text
    return resp.json()


def new_key(gw: Proc, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = admin(gw, "POST", "/admin/keys", {"owner": "e2e", "name": uuid.uuid4().hex[:8], **fields})
    return created


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def _fire(urls: list[str], key: str, total: int,
                body: Callable[[int], dict[str, Any]] | None = None) -> list[httpx.Response]:
    """`total` requests at once (24 connections), round robin over `urls`; `body(i)` the i-th body."""
    make = body or (lambda i: chat_body(f"req {i}"))
    limits = httpx.Limits(max_connections=24)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=make(i),
                                     headers={"authorization": f"Bearer {key}"})

        return list(await asyncio.gather(*(one(i) for i in range(total))))


def _assert_openai_429(resp: httpx.Response) -> None:
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert "requests per min" in err["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert resp.headers["x-ratelimit-limit-requests"] == "100"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"].endswith("s")


def test_rpm_holds_across_two_instances_on_one_redis(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    key = new_key(a, rpm=100)["key"]
    responses = asyncio.run(_fire([a.url, b.url], key, 160))
    ok = [r for r in responses if r.status_code == 200]
    assert 99 <= len(ok) <= 101  # N (+-1%) in total, not N per instance
    # Admitted answers say where the caller stands too (the gateway's limit, not the provider's).
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"100"}
    assert remaining[0] <= 1 and remaining[-1] >= 98
    refused = [r for r in responses if r.status_code != 200]
    assert refused
    for r in refused:
        _assert_openai_429(r)


def test_rpm_holds_across_two_workers_on_the_embedded_store(embedded: Proc) -> None:
    key = new_key(embedded, rpm=100)["key"]
    responses = asyncio.run(_fire([embedded.url], key, 160))
    assert 99 <= sum(r.status_code == 200 for r in responses) <= 101
    for r in responses:
        if r.status_code != 200:
            _assert_openai_429(r)


def test_team_limit_is_shared_by_the_teams_keys(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    k1 = new_key(a, team="capped-team")["key"]
    k2 = new_key(b, team="capped-team")["key"]

    async def both() -> list[httpx.Response]:
        return [*await _fire([a.url, b.url], k1, 25), *await _fire([a.url, b.url], k2, 25)]

    responses = asyncio.run(both())
    assert sum(r.status_code == 200 for r in responses) == 30
    refused = next(r for r in responses if r.status_code == 429)
    assert "team capped-team" in refused.json()["error"]["message"]


def _until_refused(client: openai.OpenAI, stream: bool, limit: int = 200) -> tuple[int, int, Any]:
    """Requests one after another until refused: (admitted, their real tokens, the refusal)."""
    admitted = used = 0
    for i in range(limit):
        try:
            if stream:
                chunks = client.chat.completions.create(
                    **chat_body(f"tokens {i}", max_tokens=60), stream=True, stream_options={"include_usage": True})
                usage = [c.usage for c in chunks if c.usage][-1]
            else:
                usage = client.chat.completions.create(**chat_body(f"tokens {i}", max_tokens=60)).usage
        except openai.RateLimitError as exc:
            return admitted, used, exc
        assert usage is not None
        admitted += 1
        used += usage.total_tokens
        time.sleep(0.03)  # the correction is an after-hook: let it land before the next check
    raise AssertionError("never refused")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_token_limit_stops_at_the_line(pair: tuple[Proc, Proc], stream: bool) -> None:
    a, b = pair
    tpm = 1200
    key = new_key(a, tpm=tpm)["key"]
    with openai.OpenAI(base_url=b.url + "/v1", api_key=key, max_retries=0) as client:
        admitted, used, refusal = _until_refused(client, stream)
    reserve = len(json.dumps(chat_body("tokens 99", max_tokens=60, stream=stream))) // 4 + 1 + 60
    assert used <= tpm
    assert tpm - used < reserve + 5  # refused only when the next reservation no longer fits
    # Reservations were corrected from real usage: without it, 1200 / ~75 would admit 16 at most.
    assert admitted > 16
    assert refusal.response.headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert "tokens per min" in refusal.message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_budget_stops_at_the_line_and_spend_is_visible(pair: tuple[Proc, Proc], stream: bool) -> None:
    a, b = pair
    budget = 0.5
    created = new_key(a, budget={"usd": budget, "period": "day"})
    with openai.OpenAI(base_url=a.url + "/v1", api_key=created["key"], max_retries=0) as client:
        admitted, used, refusal = _until_refused(client, stream)
    assert admitted >= 5
    assert refusal.code == "budget_exceeded"
    assert "Budget exceeded" in refusal.message and "day" in refusal.message
    time.sleep(0.2)
    spend = admin(b, "GET", f"/admin/spend?key={created['id']}")
    assert spend["day_usd"] == pytest.approx(used * PRICE / 1e6, abs=1e-5)
    assert spend["day_usd"] <= budget
    assert spend["budget"] == {"usd": budget, "period": "day"}
    listed = {k["id"]: k for k in admin(b, "GET", "/admin/keys")["data"]}
    assert listed[created["id"]]["spend"]["day_usd"] == pytest.approx(spend["day_usd"])
    assert "key" not in listed[created["id"]] and "digest" not in listed[created["id"]]


def test_revoked_key_is_refused_on_the_other_instance_within_a_second(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    created = new_key(a, models=["gpt-4o-mini"])
    headers = {"authorization": f"Bearer {created['key']}"}
    for gw in (a, b, b, b):  # warm the caches of both instances (both workers, likely)
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat_body("hi"), headers=headers).status_code == 200
    admin(a, "POST", "/admin/keys/revoke", {"id": created["id"]})
    assert_refused_a_second_after(lambda: httpx.post(b.url + "/v1/chat/completions", json=chat_body("hi"),
                                                     headers=headers))


def assert_refused_a_second_after(send: Callable[[], httpx.Response]) -> None:
    """Every request sent a second or more after a revocation is refused. Each worker caches a key
    for at most its TTL, so one worker may refuse it before another does: the promise is about when
    a request leaves, not when the first refusal comes back (answers may be slow on a busy machine)."""
    t = time.monotonic()
    late: list[httpx.Response] = []
    while len(late) < 6:
        sent = time.monotonic() - t
        resp = send()
        assert resp.status_code in (200, 401), resp.text
        if sent >= 1.0:
            late.append(resp)
    assert [r.status_code for r in late] == [401] * 6, "accepted a second after revocation"
    assert all(r.json()["error"]["code"] == "invalid_api_key" for r in late)


def test_key_rotation_and_model_allow_list(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    created = new_key(a, models=["gpt-4o-mini"])
    rotated = admin(a, "POST", "/admin/keys/rotate", {"id": created["id"]})
    assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
    time.sleep(0.6)
    old = httpx.post(b.url + "/v1/chat/completions", json=chat_body("x"),
                     headers={"authorization": f"Bearer {created['key']}"})
    assert old.status_code == 401
    new = {"authorization": f"Bearer {rotated['key']}"}
    assert httpx.post(b.url + "/v1/chat/completions", json=chat_body("x"), headers=new).status_code == 200
    other = httpx.post(b.url + "/v1/chat/completions", json={**chat_body("x"), "model": "claude-house"},
                       headers=new)
    assert other.status_code == 403


def test_raising_a_limit_through_the_admin_api_reaches_the_other_instance(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    created = new_key(a, rpm=2)
    headers = {"authorization": f"Bearer {created['key']}"}

    def ask() -> int:
        return httpx.post(b.url + "/v1/chat/completions", json=chat_body("hi"), headers=headers).status_code

    assert [ask() for _ in range(3)] == [200, 200, 429]
    updated = admin(a, "POST", "/admin/keys/update", {"id": created["id"], "rpm": 10, "models": ["gpt-4o-mini"]})
    assert updated["quota"]["rpm"] == 10 and updated["models"] == ["gpt-4o-mini"] and "key" not in updated
    time.sleep(0.6)  # key_cache_ttl_s: every worker has the new record
    assert ask() == 200
    bad = httpx.post(a.url + "/admin/keys/update", json={"id": created["id"], "rpm": -1},
                     headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert bad.status_code == 400 and "rpm" in bad.json()["error"]["message"]
    missing = httpx.post(a.url + "/admin/keys/update", json={"id": "vk_nope", "rpm": 1},
                         headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert missing.status_code == 404


def test_rotation_with_a_grace_period(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    created = new_key(a)
    rotated = admin(a, "POST", "/admin/keys/rotate", {"id": created["id"], "grace_s": 3})
    for key in (created["key"], rotated["key"]):  # both work during the grace period
        resp = httpx.post(b.url + "/v1/chat/completions", json=chat_body("x"),
                          headers={"authorization": f"Bearer {key}"})
        assert resp.status_code == 200
    time.sleep(3.7)  # the grace period and the key cache both ran out
    old = httpx.post(b.url + "/v1/chat/completions", json=chat_body("x"),
                     headers={"authorization": f"Bearer {created['key']}"})
    assert old.status_code == 401


def test_admin_api_needs_the_master_key_and_config_keys_still_work(pair: tuple[Proc, Proc]) -> None:
    a, _ = pair
    resp = httpx.post(a.url + "/admin/keys", json={}, headers={"authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 401
    ok = httpx.post(a.url + "/v1/chat/completions", json=chat_body("config key"),
                    headers={"authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200
    bogus = httpx.post(a.url + "/v1/chat/completions", json=chat_body("x"),
                       headers={"authorization": "Bearer sk-gw-not-a-real-key"})
    assert bogus.status_code == 401
    assert a.get_json("/readyz")["degraded"] == {}


def test_anthropic_shape_429(pair: tuple[Proc, Proc]) -> None:
    a, _ = pair
    key = new_key(a, rpm=1)["key"]
    body = {"model": "claude-house", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    assert httpx.post(a.url + "/v1/messages", json=body, headers=headers).status_code == 200
    refused = httpx.post(a.url + "/v1/messages", json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["retry-after"] and refused.headers["x-ratelimit-limit-requests"] == "1"
