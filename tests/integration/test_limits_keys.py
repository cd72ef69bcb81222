"""Virtual keys over a real Redis and the embedded store: issue, look up, rotate, revoke; and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.errors import ServiceUnavailable
from gateway.governance.keys import PREFIX, KeyStore, digest_of
from gateway.governance.settings import Budget
from gateway.store import open_store
from gateway.store.redis import RedisStore


@pytest.fixture(params=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "redis":
        s: Any = RedisStore(request.getfixturevalue("redis_url"))
    else:
        s = open_store(None, str(tmp_path / "store.db"))
    yield s
    await s.close()


async def test_issue_lookup_and_list(store: Any) -> None:
    ks = KeyStore(store, ttl_s=0.2)
    secret, vk = await ks.create(owner="ana", team="red", models=["gpt-4o"], rpm=10, budget=Budget(5, "day"))
    assert secret.startswith(PREFIX) and vk.digest == digest_of(secret) and vk.hint == secret[:10]
    raw = json.dumps([await store.get("gw:vk:i:" + vk.id), await store.get("gw:vk:d:" + vk.digest)], default=str)
    assert secret not in raw  # stored hashed only
    record = await ks.lookup(secret)
    assert record is not None and record.id == vk.id and record.team == "red"
    assert record.models == frozenset({"gpt-4o"})
    assert await ks.lookup(PREFIX + "unknown") is None
    assert await ks.lookup("sk-not-virtual") is None
    listed = await ks.list()
    assert [k.id for k in listed] == [vk.id] and listed[0].quota.rpm == 10


async def test_revocation_reaches_another_worker_within_its_ttl(store: Any) -> None:
    admin, worker = KeyStore(store, ttl_s=0.3), KeyStore(store, ttl_s=0.3)
    secret, vk = await admin.create(owner="bob")
    assert await worker.lookup(secret) is not None
    await admin.revoke(vk.id)
    assert await admin.lookup(secret) is None  # the revoking worker at once
    await asyncio.sleep(0.35)
    assert await worker.lookup(secret) is None  # every other worker within the TTL
    assert (await admin.get(vk.id)).revoked > 0  # type: ignore[union-attr]
    assert await admin.rotate(vk.id) is None  # a revoked key can't be brought back


async def test_rotation_keeps_the_id_and_drops_the_old_secret(store: Any) -> None:
    ks = KeyStore(store, ttl_s=0.1)
    old, vk = await ks.create(rpm=3)
    rotated = await ks.rotate(vk.id)
    assert rotated is not None
    new, vk2 = rotated
    assert vk2.id == vk.id and vk2.quota.rpm == 3 and new != old
    assert await ks.lookup(old) is None
    assert (await ks.lookup(new)) is not None


async def test_rotation_with_a_grace_period_keeps_the_old_secret_for_a_while(store: Any) -> None:
    ks, other = KeyStore(store, ttl_s=0.05), KeyStore(store, ttl_s=0.05)
    old, vk = await ks.create(rpm=3)
    rotated = await ks.rotate(vk.id, grace_s=0.6)
    assert rotated is not None
    new, _ = rotated
    assert await other.lookup(old) is not None and await other.lookup(new) is not None
    updated = await ks.update(vk.id, rpm=9)  # an update during the grace reaches the old secret too
    assert updated is not None and updated.quota.rpm == 9
    await asyncio.sleep(0.1)
    assert (await other.resolve(old)).quota.rpm == 9  # type: ignore[union-attr]
    await asyncio.sleep(0.7)
    assert await other.lookup(old) is None and await other.lookup(new) is not None


async def test_revoking_ends_a_grace_period_at_once(store: Any) -> None:
    ks, other = KeyStore(store, ttl_s=0.05), KeyStore(store, ttl_s=0.05)
    old, vk = await ks.create()
    rotated = await ks.rotate(vk.id, grace_s=60)
    assert rotated is not None
    await ks.revoke(vk.id)
    await asyncio.sleep(0.1)
    assert await other.lookup(old) is None and await other.lookup(rotated[0]) is None


async def test_update_changes_limits_everywhere_and_keeps_the_secret(store: Any) -> None:
    ks, other = KeyStore(store, ttl_s=0.05), KeyStore(store, ttl_s=0.05)
    secret, vk = await ks.create(owner="ana", team="t1", rpm=3, budget=Budget(5.0, "day"))
    first = await other.resolve(secret)
    assert first is not None and first.quota.rpm == 3
    updated = await ks.update(vk.id, rpm=None, tpm=1000, models=["gpt-4o-mini"], team="t2")
    assert updated is not None
    assert updated.quota.rpm is None and updated.quota.tpm == 1000 and updated.quota.budget == Budget(5.0, "day")
    assert updated.owner == "ana" and updated.updated >= updated.created
    await asyncio.sleep(0.1)
    seen = await other.resolve(secret)
    assert seen is not None and seen.quota.tpm == 1000 and seen.team == "t2" and seen.models == ["gpt-4o-mini"]
    assert other.by_id(vk.id) == seen  # the limiter reads the quota from here
    await ks.revoke(vk.id)
    assert await ks.update(vk.id, rpm=1) is None and await ks.update("vk_none", rpm=1) is None


async def test_concurrent_lookups_share_one_store_read(store: Any) -> None:
    ks = KeyStore(store)
    secret, _ = await ks.create()
    reads = 0
    real_get = store.get

    async def counting_get(key: str) -> Any:
        nonlocal reads
        reads += 1
        return await real_get(key)

    store.get = counting_get
    records = await asyncio.gather(*(ks.lookup(secret) for _ in range(50)))
    assert all(r is not None for r in records) and reads == 1


async def test_outage_serves_cached_keys_and_refuses_unknown_ones(redis_server: Any, redis_url: str) -> None:
    store = RedisStore(redis_url)
    ks = KeyStore(store, ttl_s=0.05)
    secret, _ = await ks.create()
    assert await ks.lookup(secret) is not None
    redis_server.stop()
    try:
        await asyncio.sleep(0.06)
        assert await ks.lookup(secret) is not None  # stale, while the store is away
        with pytest.raises(ServiceUnavailable):
            await ks.lookup(PREFIX + "never-seen")
    finally:
        redis_server.start()
        await store.close()


def test_cli_create_list_rotate_revoke(redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"redis_url": redis_url}}))
    base = ["keys", "--config", str(cfg)]
    assert main([*base, "create", "--owner", "ops", "--team", "blue", "--models", "a,b", "--rpm", "5",
                 "--budget-usd", "2.5", "--budget-period", "day", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(PREFIX) and created["models"] == ["a", "b"]
    assert created["quota"] == {"rpm": 5, "budget": {"usd": 2.5, "period": "day"}}
    assert main([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert created["id"] in listing and created["key"] not in listing
    assert main([*base, "update", created["id"], "--tpm", "900", "--clear", "rpm,models", "--json"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["quota"] == {"tpm": 900, "budget": {"usd": 2.5, "period": "day"}} and "models" not in updated
    assert "key" not in updated  # the secret is unchanged and never printed again
    assert main([*base, "update", created["id"]]) == 2  # nothing to change
    assert main([*base, "rotate", created["id"], "--grace-s", "30", "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["key"] != created["key"] and rotated["previous_until"] > rotated["rotated"]
    assert main([*base, "revoke", created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main([*base, "rotate", created["id"]]) == 1
