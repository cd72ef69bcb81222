"""Cache generations: a clear of one scope moves that scope's partitions, and no other's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import ops
from gateway.cache.generations import GEN_KEY, Generations, scope_of
from gateway.cache.keys import compute
from gateway.cache.metacache import SHARED, CacheRequest, CacheSettings, MetaCache
from gateway.config import load_config
from gateway.store.embedded import EmbeddedStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    s = EmbeddedStore(str(tmp_path / "store.db"))
    yield s
    await s.close()


def body(model: str, text: str = "What is the capital of France?") -> dict[str, Any]:
    return {"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]}


def partitions(cache: MetaCache) -> dict[tuple[str, str], str]:
    """The partition of one request per (key, model), and of a shared-scope request per model."""
    out = {}
    for tenant in ("team-a", "team-b"):
        for model in ("gpt-4o", "fast", "claude"):
            out[(tenant, model)] = cache.keys(CacheRequest(tenant=tenant, endpoint="chat", body=body(model))).partition
    for model in ("gpt-4o", "claude"):
        shared = CacheRequest(tenant="team-a", endpoint="chat", body=body(model), scope="shared")
        out[(SHARED, model)] = cache.keys(shared).partition
    return out


def moved(before: dict[Any, str], after: dict[Any, str]) -> set[Any]:
    return {k for k in before if before[k] != after[k]}


def test_an_empty_salt_keeps_the_digests_of_before() -> None:
    # Nothing ever cleared: entries stored by an older version stay reachable.
    assert compute("t", "chat", body("m")) == compute("t", "chat", body("m"), "")
    assert compute("t", "chat", body("m")).partition != compute("t", "chat", body("m"), "a1").partition


async def test_a_clear_moves_exactly_its_scope(store: EmbeddedStore) -> None:
    cache = MetaCache(store, CacheSettings())
    routes = [*load_config(None, environ={}).models, _route("gpt-4o", ["fast"])]
    p0 = partitions(cache)

    await ops.clear(cache, ops.ClearRequest(model="gpt-4o"), routes)  # the route: its alias too
    p1 = partitions(cache)
    assert moved(p0, p1) == {("team-a", "gpt-4o"), ("team-a", "fast"), ("team-b", "gpt-4o"),
                             ("team-b", "fast"), (SHARED, "gpt-4o")}

    await ops.clear(cache, ops.ClearRequest(key="team-b"), routes)
    p2 = partitions(cache)
    assert moved(p1, p2) == {("team-b", m) for m in ("gpt-4o", "fast", "claude")}  # not the shared ones

    await ops.clear(cache, ops.ClearRequest(model="claude", key="team-a"), routes)
    assert moved(p2, p3 := partitions(cache)) == {("team-a", "claude")}

    await ops.clear(cache, ops.ClearRequest(), routes)
    assert moved(p3, partitions(cache)) == set(p3)


async def test_the_exact_key_moves_with_the_partition_and_is_computed_once(store: EmbeddedStore) -> None:
    cache = MetaCache(store, CacheSettings())
    r = CacheRequest(tenant="team-a", endpoint="chat", body=body("gpt-4o"))
    k = cache.keys(r)
    await cache.clear([scope_of("gpt-4o")])
    # The request already looked up keeps its keys: its write-back lands in the generation it saw.
    assert cache.keys(r) is k
    fresh = cache.keys(CacheRequest(tenant="team-a", endpoint="chat", body=body("gpt-4o")))
    assert fresh.exact != k.exact and fresh.exact.startswith(fresh.partition)


async def test_other_workers_see_a_clear_on_their_next_refresh(store: EmbeddedStore, tmp_path: Path) -> None:
    other_store = EmbeddedStore(str(tmp_path / "store.db"))  # another process's connection
    try:
        mine, theirs = Generations(store), Generations(other_store)
        await mine.refresh()
        await theirs.refresh()
        assert mine.salt("gpt-4o", "t") == theirs.salt("gpt-4o", "t") == ""
        await mine.bump([scope_of("gpt-4o")])
        assert mine.salt("gpt-4o", "t") != theirs.salt("gpt-4o", "t")  # not yet
        assert await theirs.refresh() is True
        assert mine.salt("gpt-4o", "t") == theirs.salt("gpt-4o", "t") != ""
        assert theirs.salt("claude", "t") == "" and theirs.salt(None, "t") == ""
        assert await theirs.refresh() is False  # nothing new
    finally:
        await other_store.close()


async def test_concurrent_clears_of_different_scopes_both_survive(store: EmbeddedStore, tmp_path: Path) -> None:
    stores = [EmbeddedStore(str(tmp_path / "store.db")) for _ in range(4)]
    try:
        gens = [Generations(s) for s in stores]
        scopes = [scope_of("m1"), scope_of("m2"), scope_of(None, "k1"), scope_of("m3", "k2")]
        await asyncio.gather(*(g.bump([s]) for g, s in zip(gens, scopes, strict=True)))
        assert set(await store.map_all(GEN_KEY)) == set(scopes)
    finally:
        for s in stores:
            await s.close()


def test_a_worker_that_has_not_read_the_map_serves_no_old_entry(store: EmbeddedStore) -> None:
    unread = Generations(store)
    assert unread.salt("gpt-4o", "t") not in ("", Generations(store).salt("gpt-4o", "t"))
    unread.assume_none()
    assert unread.salt("gpt-4o", "t") == ""


def test_clear_requests_are_checked() -> None:
    assert ops.check(ops.ClearRequest(model=" ")) is not None
    assert ops.check(ops.ClearRequest(key="k" * 300)) is not None
    assert ops.check(ops.ClearRequest(model="gpt-4o", key="team-a")) is None
    assert ops.scopes_for(ops.ClearRequest(), []) == ["*"]


def _route(name: str, aliases: list[str]) -> Any:
    from gateway.config import ModelConfig

    return ModelConfig(name=name, aliases=aliases, deployments=[])


async def test_salts_are_remembered_per_model_and_key_and_forgotten_on_a_change(store: EmbeddedStore) -> None:
    gens = Generations(store)
    await gens.bump([scope_of("gpt-4o")])
    first = gens.salt("gpt-4o", "t")
    assert gens.salt(["not", "a", "name"], "t") == gens.salt(None, "t") == ""  # any JSON a client sends
    await gens.bump([scope_of("gpt-4o")])
    assert gens.salt("gpt-4o", "t") not in (first, "")
    for i in range(10_000):  # names clients made up do not grow the memo without bound
        gens.salt(f"model-{i}", "t")
    assert len(gens._memo) <= 8192
