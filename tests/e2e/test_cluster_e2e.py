"""Three gateway instances (Granian, 2 workers each) on one local Redis Cluster (3 masters, 3 replicas):
the cache, limits, budgets and virtual keys are shared across instances exactly as on one Redis, and a
master killed under load costs no request.

The failover test kills a master, so it runs last (the cluster keeps 3 masters and 2 replicas)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RedisClusterNodes, free_port, own_redis_cluster
from tests.integration.test_store_cluster import _wait_replica_linked

from .conftest import API_KEY, MASTER_KEY, Proc, start_mock, start_process, write_config
from .test_governance_limits import (
    GOVERNANCE,
    PRICE,
    _fire,
    admin,
    assert_refused_a_second_after,
    chat_body,
    new_key,
)

LIMITED_KEY = "sk-test-e2e-limited"  # a configured key (no store lookup to authenticate) with an RPM
LIMITED_RPM = 200
BREAKER_WINDOW_S = 2.0  # the store breaker's longest back-off (gateway/store/base.py)
# What a request sent at the end of the window may still take on a loaded 2-core machine to reach
# the store: the breaker lets one probe through per worker, the others wait for it.
SLACK_S = 1.0
SYSTEM = {"role": "system", "content": "You are terse."}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    yield from own_redis_cluster()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, cluster: RedisClusterNodes) -> Iterator[list[Proc]]:
    tmp: Path = tmp_path_factory.mktemp("cluster-e2e")
    mock = start_mock(tmp, "mock")
    env = {"E2E_API_KEY": API_KEY, "E2E_LIMITED_KEY": LIMITED_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret",
           "GATEWAY_MASTER_KEY": MASTER_KEY, "GATEWAY_REDIS_URL": cluster.url}
    extra = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"},
                                           {"id": "limited", "key_env": "E2E_LIMITED_KEY"}]},
        "governance": {**GOVERNANCE, "keys": {"limited": {"rpm": LIMITED_RPM}}},
        # Phase 4 always runs: a loaded CI machine must not turn a semantic hit into a load-shedding skip.
        "cache": {"embed_budget_ms": 10_000, "write_embed_budget_ms": 10_000, "verify_budget_ms": 10_000,
                  "busy_lag_ms": 0},
    }
    gws: list[Proc] = []
    try:
        for name in ("gw-a", "gw-b", "gw-c"):
            cfg = write_config(tmp / f"{name}.yaml", mock, free_port(), mock, extra=extra)
            gws.append(start_process(["serve", "--config", str(cfg), "--workers", "2"], tmp / f"{name}.log",
                                     env=env, ready_path="/readyz"))
        yield gws
    finally:
        for p in [*gws, mock]:
            p.stop()


def _chat(gw: Proc, text: str, key: str = API_KEY) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=chat_body(text, temperature=0),
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def _ask(gw: Proc, text: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [SYSTEM, {"role": "user", "content": text}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {API_KEY}"}, timeout=30)


def _hit_within(gw: Proc, text: str, timeout: float = 15.0) -> httpx.Response:
    """The first cache hit for `text` on `gw`: the write-back runs after the answer, and another
    instance's workers see a new vector on their next log sync; poll for it."""
    deadline = time.monotonic() + timeout
    while (resp := _ask(gw, text)).headers.get("x-cache-hit") != "true":
        assert resp.status_code == 200, resp.text
        assert time.monotonic() < deadline, f"no hit for {text!r} on {gw.url}"
        time.sleep(0.1)
    return resp


def test_an_answer_cached_by_one_instance_is_an_exact_and_a_semantic_hit_on_the_others(trio: list[Proc]) -> None:
    a, *others = trio
    first = _ask(a, "Explain how photosynthesis works")
    assert first.status_code == 200 and first.headers.get("x-cache-hit") != "true"
    for gw in others:
        exact = _hit_within(gw, "Explain how photosynthesis works")
        assert exact.headers["x-cache-phase"] in ("1", "3") and exact.json()["choices"] == first.json()["choices"]
        # A paraphrase: the vector written by `a` is in every worker's index, and the verifier passes it.
        para = _hit_within(gw, "How does photosynthesis work?")
        assert para.headers["x-cache-phase"] == "4" and float(para.headers["x-cache-similarity"]) >= 0.90
        assert para.json()["choices"] == first.json()["choices"]


def test_rpm_of_300_hammered_from_three_instances_admits_300(trio: list[Proc]) -> None:
    key = new_key(trio[0], rpm=300)["key"]
    responses = asyncio.run(_fire([gw.url for gw in trio], key, 450))
    assert 297 <= sum(r.status_code == 200 for r in responses) <= 303  # 300 within 1%, not 300 per instance
    assert {r.status_code for r in responses} == {200, 429}


def _long_body(i: int) -> dict[str, Any]:
    """A request whose reservation (body bytes / 4 + max_tokens) is close to what the mock bills, so
    requests in flight hold little more than they use: 400 characters of prompt, an answer of 56
    tokens (the mock answers "This is a mock answer to: " + the first 200 characters)."""
    text = f"tokens {i:05d} " + "the quick brown fox jumps over the lazy dog " * 9
    return chat_body(text[:400], max_tokens=56)


def _used_tokens(responses: list[httpx.Response]) -> int:
    return sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)


def test_tpm_hammered_from_three_instances_admits_its_tokens(trio: list[Proc]) -> None:
    tpm = 50_000  # about 300 requests of 164 tokens
    key = new_key(trio[0], tpm=tpm)["key"]
    responses = asyncio.run(_fire([gw.url for gw in trio], key, 420, _long_body))
    used = _used_tokens(responses)
    assert 0.99 * tpm <= used <= tpm, used
    refused = [r for r in responses if r.status_code != 200]
    assert refused and all(r.status_code == 429 and "tokens per min" in r.json()["error"]["message"]
                           for r in refused)


def test_daily_budget_hammered_from_three_instances_is_spent_to_the_line(trio: list[Proc]) -> None:
    budget = 50.0  # USD; a request of 164 tokens costs $0.164 here: about 300 requests
    created = new_key(trio[0], budget={"usd": budget, "period": "day"})
    responses = asyncio.run(_fire([gw.url for gw in trio], created["key"], 420, _long_body))
    spent = _used_tokens(responses) * PRICE / 1e6
    assert 0.99 * budget <= spent <= budget, spent
    refused = [r for r in responses if r.status_code != 200]
    assert refused and all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    # Every instance's ledger of it agrees once the workers' batched corrections have landed.
    deadline = time.monotonic() + 10
    for gw in trio:
        while (day := admin(gw, "GET", f"/admin/spend?key={created['id']}")["day_usd"]) != pytest.approx(spent,
                                                                                                        abs=1e-5):
            assert time.monotonic() < deadline, (day, spent)
            time.sleep(0.1)


def test_a_key_revoked_on_one_instance_is_refused_on_all_within_a_second(trio: list[Proc]) -> None:
    created = new_key(trio[0])
    for gw in [*trio, *trio, *trio]:  # warm every instance's key cache (both workers, likely)
        assert _chat(gw, "hi", created["key"]).status_code == 200
    admin(trio[1], "POST", "/admin/keys/revoke", {"id": created["id"]})
    turn = iter(range(1_000_000))
    assert_refused_a_second_after(lambda: _chat(trio[next(turn) % 3], "hi", created["key"]))


# ---- a master killed under load -----------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # "limited" | "cached" | "plain"
    prompt: str
    at: float  # monotonic send time
    status: int = 0
    hit: bool = False
    counted: bool = False  # the answer carries x-ratelimit-*: the limit was checked in the store
    error: str = ""


async def _load(urls: list[str], rate: float, cached: list[str], stop: asyncio.Event, out: list[Sent]) -> None:
    """An open loop at `rate` requests per second over `urls` until `stop`: a fifth for the limited
    key (pass-through), two fifths cacheable prompts from `cached`, the rest pass-through."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int, rec: Sent, body: dict[str, Any], key: str) -> None:
            try:
                r = await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {key}"})
            except httpx.HTTPError as exc:
                rec.error = repr(exc)
                return
            rec.status, rec.hit = r.status_code, r.headers.get("x-cache-hit") == "true"
            rec.counted = r.headers.get("x-ratelimit-limit-requests") == str(LIMITED_RPM)  # not the mock's
            if r.status_code not in (200, 429):
                rec.error = r.text[:300]

        start = time.monotonic()
        i = 0
        while not stop.is_set():
            slot = i % 5
            if slot == 0:
                rec, key = Sent("limited", f"limited {i}", time.monotonic()), LIMITED_KEY
                body = chat_body(rec.prompt, temperature=1)
            elif slot in (1, 2):
                text = cached[(i // 5 * 2 + slot) % len(cached)]
                rec, key = Sent("cached", text, time.monotonic()), API_KEY
                body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [SYSTEM, {"role": "user",
                                                                                         "content": text}]}
            else:
                rec, key = Sent("plain", f"plain {i}", time.monotonic()), API_KEY
                body = chat_body(rec.prompt, temperature=1)
            out.append(rec)
            tasks.append(asyncio.ensure_future(one(i, rec, body, key)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))  # the schedule, not a pause
        await asyncio.gather(*tasks)


def _entries_on(cluster: RedisClusterNodes, port: int) -> int:
    return len(cluster.client(port).keys("gw:c:e:*"))  # test-only: the gateway never runs KEYS


def _owner_everywhere(cluster: RedisClusterNodes, key: str, port: int) -> bool:
    """Every live node's slot map gives `key`'s slot to `port` (what a client refreshing it reads)."""
    slot = int(cluster.client(port).execute_command("CLUSTER KEYSLOT", key))
    for p in cluster.alive():
        owners = [int(m[1]) for start, end, m, *_ in cluster.client(p).execute_command("CLUSTER SLOTS")
                  if start <= slot <= end]
        if owners != [port]:
            return False
    return True


def _promoted_at(cluster: RedisClusterNodes, replica: int, key: str, timeout: float = 40.0) -> float:
    """When every node knew the replica as the master of `key`'s slot (automatic failover after the
    3 s node timeout, then an election and its broadcast); forced after 8 s."""
    import redis

    start = time.monotonic()
    forced = False
    while time.monotonic() < start + timeout:
        if _owner_everywhere(cluster, key, replica):
            return time.monotonic()
        if not forced and time.monotonic() > start + 8:
            forced = True
            try:
                cluster.client(replica).execute_command("CLUSTER", "FAILOVER", "FORCE")
            except redis.ResponseError:
                pass  # promoted meanwhile
        time.sleep(0.02)
    raise TimeoutError("replica not promoted")


def _written_and_hit_on(trio: list[Proc], cluster: RedisClusterNodes, owner: int, tries: int = 40) -> float:
    """New prompts, each answered by one instance, until one's entry lands on `owner`: it must be an
    exact hit on the other two at their first ask. Returns when that prompt was sent."""
    masters = [p for p in cluster.alive() if cluster.client(p).execute_command("ROLE")[0] == b"master"]
    lost: list[str] = []
    for n in range(tries):
        text = f"After the failover, name one use of the metal number {n} in the catalogue"
        counts = {p: _entries_on(cluster, p) for p in masters}
        sent = time.monotonic()
        assert _ask(trio[n % 3], text).status_code == 200
        deadline = time.monotonic() + 10  # the write-back runs after the answer: poll the store for it
        while (grown := [p for p in masters if _entries_on(cluster, p) > counts[p]]) == [] \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        if not grown:
            # The cache is best effort: a write-back from a worker whose breaker is still backing off
            # is dropped, not retried. A few may be lost right after the window, not more.
            lost.append(text)
            assert len(lost) <= 3, f"answers never written after the failover: {lost}"
            continue
        if grown == [owner]:
            for gw in (trio[(n + 1) % 3], trio[(n + 2) % 3]):
                assert _ask(gw, text).headers.get("x-cache-hit") == "true", f"no hit through {gw.url}"
            return sent
    raise AssertionError(f"no entry landed on {owner} in {tries} prompts")


# Timing on a 2-core machine running six Redis nodes and six workers made this flaky in CI (a lost
# write-back, no unchecked admit): it runs in the fault suite's full form (`make faults`).
@pytest.mark.skipif(os.environ.get("GATEWAY_FAULTS") != "full", reason="full fault suite only (make faults)")
def test_a_master_killed_under_load_fails_no_request(trio: list[Proc], cluster: RedisClusterNodes) -> None:
    # The victim: the master holding the limited key's counters ({k:limited}); its replica must be in sync.
    counter = "gw:rl:{k:limited}:k:limited:r"
    victim = cluster.master_of(counter)
    replica = cluster.replica_of(victim)
    _wait_replica_linked(cluster, replica)
    # Cacheable prompts, warmed on every instance; some of them stored on the victim (checked).
    on_victim: list[str] = []
    cached: list[str] = []
    for n in range(40):
        text = f"Give me one fact about the planet number {n} of the solar catalogue"
        before = _entries_on(cluster, victim)
        assert _ask(trio[n % 3], text).status_code == 200
        for gw in trio:
            _hit_within(gw, text)
        cached.append(text)
        if _entries_on(cluster, victim) > before:
            on_victim.append(text)
        if len(on_victim) >= 3 and len(cached) >= 6:
            break
    assert len(on_victim) >= 3, "no cache entry landed on the victim master"

    sent: list[Sent] = []
    times: dict[str, float] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        load = asyncio.ensure_future(_load([gw.url for gw in trio], 100, cached, stop, sent))
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 60
        while sum(s.kind == "limited" and s.counted for s in sent) < 40:  # the limit is in use first
            assert time.monotonic() < deadline and not load.done()
            await asyncio.sleep(0.05)
        times["kill"] = time.monotonic()
        cluster.kill(victim)  # SIGKILL, under load
        times["promoted"] = await loop.run_in_executor(None, _promoted_at, cluster, replica, counter)
        # The cache, once the window is over: a new answer written through one instance into the
        # promoted master's slots is a hit on the other two (the per-worker L1 cannot fake this).
        await asyncio.sleep(max(0.0, times["promoted"] + BREAKER_WINDOW_S + SLACK_S - time.monotonic()))
        times["cache_back"] = await loop.run_in_executor(None, _written_and_hit_on, trio, cluster, replica)
        # Run on well past the window, and until the limited key's window is full again.
        while time.monotonic() < times["promoted"] + BREAKER_WINDOW_S + SLACK_S + 6 or not any(
                s.kind == "limited" and s.status == 429 and s.at > times["promoted"] for s in sent):
            assert time.monotonic() < deadline + 60 and not load.done()
            await asyncio.sleep(0.05)
        stop.set()
        await load

    asyncio.run(scenario())
    kill, promoted = times["kill"], times["promoted"]
    failed = [s for s in sent if s.error or s.status not in (200, 429) or (s.status == 429 and s.kind != "limited")]
    assert failed == [], failed[:5]
    assert len(sent) >= 100 * (promoted - sent[0].at) * 0.8  # the load really ran at about 100 req/s
    back = promoted + BREAKER_WINDOW_S + SLACK_S
    # Limits: while the victim was away the limited key was admitted unchecked (store_failure: open,
    # no x-ratelimit headers); every request sent a breaker window after the promotion was checked.
    limited = [s for s in sent if s.kind == "limited"]
    unchecked = [s for s in limited if s.status == 200 and not s.counted]
    assert all(s.at > kill - 0.5 for s in unchecked)  # none at all when leases covered the outage
    assert [round(s.at - promoted, 2) for s in unchecked if s.at > back] == [], "limits not back in the window"
    # Cache: answers cached before the kill kept hitting (the promoted replica had them; the workers'
    # L1 served the repeats meanwhile), and a new entry was shared through the new master at `back`.
    late = [s for s in sent if s.kind == "cached" and s.at > back]
    assert late and all(s.hit for s in late), [s.prompt for s in late if not s.hit][:5]
    assert times["cache_back"] >= back
    # The bound: the promoted replica holds every admit the dead master had replicated, so the window
    # admits LIMITED_RPM, give or take what leases in flight at the kill held (6 workers x a slice of
    # 1/64 of the limit: 3 requests): leases acquired but unreplicated (more), given back into the
    # outage (fewer). The unchecked ones are the documented price of `store_failure: open`.
    checked = sum(s.status == 200 and s.counted for s in limited)
    assert abs(checked - LIMITED_RPM) <= 6 * max(1, LIMITED_RPM // 64), checked
    print(f"\nfailover: promoted {promoted - kill:.1f} s after the kill; {len(sent)} requests, 0 failed; "
          f"limited key: {checked} checked admits of {LIMITED_RPM}, {len(unchecked)} unchecked, the last "
          f"sent {max(s.at for s in unchecked) - promoted:+.2f} s from the promotion; a new entry shared "
          f"through the new master, sent {times['cache_back'] - promoted:+.2f} s from it")
