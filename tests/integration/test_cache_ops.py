"""`cache clear` and `cache stats` on real stores (Redis and the embedded file), through two MetaCaches
with their own store clients: two workers or pods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import ops
from gateway.cache.generations import Generations
from gateway.cache.metacache import CacheHit, CacheSettings, MetaCache
from gateway.config import ModelConfig
from gateway.embed.session import Embedder
from gateway.store import Store, open_store
from tests.integration.test_metacache import answer, chat, req

ROUTES = [ModelConfig(name="gpt-4o-mini", aliases=["mini"], deployments=[]),
          ModelConfig(name="gpt-4o", deployments=[])]
QUESTION = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a list in Python?"
TOOLS = [{"type": "function", "function": {"name": "run"}}]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    emb = Embedder()
    yield emb
    emb.close()


@pytest.fixture(params=["redis", "embedded"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made = [open_store(url, str(tmp_path / "store.db"), connect_timeout_s=5.0, op_timeout_s=5.0) for _ in range(2)]
    yield made
    for s in made:
        await s.close()


@pytest.fixture
async def workers(stores: list[Store], embedder: Embedder) -> AsyncIterator[list[MetaCache]]:
    """Two MetaCaches as a worker builds them: generations read, then refreshed in the background."""
    made = []
    for s in stores:
        gens = Generations(s, refresh_s=0.05)
        await gens.refresh()
        gens.start()
        made.append(MetaCache(s, CacheSettings(embed_budget_ms=10_000, write_embed_budget_ms=10_000),
                              embedder=embedder, generations=gens))
    yield made
    for cache in made:
        await cache.drain()
        await cache.generations.close()


async def fill(cache: MetaCache, model: str) -> None:
    for body in (chat(QUESTION, model=model), chat("run it", model=model, tools=TOOLS)):
        r = req(body)
        assert await cache.lookup(r) is None
        await cache.store(r, answer(f"answer of {model}"))


async def lookups(cache: MetaCache, model: str) -> list[CacheHit | None]:
    """The same question (phase 1), a paraphrase (phase 4) and a tools request (phase 3)."""
    return [await cache.lookup(req(chat(text, model=model, **kw)))
            for text, kw in ((QUESTION, {}), (PARAPHRASE, {}), ("run it", {"tools": TOOLS}))]


async def until(check: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def test_the_store_keeps_maps_counts_keys_and_reports_memory(stores: list[Store]) -> None:
    a, b = stores
    await asyncio.gather(a.map_set("gw:test-map", "x", b"1"), b.map_set("gw:test-map", "y", b"2"))
    await a.map_set("gw:test-map", "x", b"3")
    assert await b.map_all("gw:test-map") == {"x": b"3", "y": b"2"}
    assert await b.map_all("gw:no-map") == {}
    for i in range(5):
        await a.set(f"gw:c:e:{{p}}{i}", b"e", ttl_s=60)
    await a.set("gw:c:e:{p}short", b"e", ttl_s=0.05)
    await a.set("gw:c:i:{p}x", b"pointer")
    await asyncio.sleep(0.2)
    assert await b.count("gw:c:e:") == 5  # the expired one is not counted, nor other kinds
    mem = await b.memory()
    assert mem.backend in ("redis", "embedded") and mem.bytes > 0 and mem.detail


async def test_a_model_clear_on_one_worker_reaches_the_other_and_spares_other_models(
        workers: list[MetaCache]) -> None:
    a, b = workers
    await fill(a, "gpt-4o-mini")
    await fill(a, "gpt-4o")
    await asyncio.sleep(0.3)  # b follows the vector change log every 0.25 s
    for model in ("gpt-4o-mini", "gpt-4o"):
        assert [h.phase if h else None for h in await lookups(b, model)] == [1, 4, 3], model
        assert [h.phase if h else None for h in await lookups(a, model)] == [1, 4, 3], model  # a's L1 too

    report = await ops.clear(b, ops.ClearRequest(model="mini"), ROUTES)  # an alias clears its route
    assert set(report.scopes) == {"model:gpt-4o-mini", "model:mini"} and not report.deleted

    async def a_misses() -> bool:
        return await lookups(a, "gpt-4o-mini") == [None, None, None]

    await until(a_misses)  # intent, semantic and exact, L1 included
    assert await lookups(b, "gpt-4o-mini") == [None, None, None]
    for cache in (a, b):
        assert [h.phase if h else None for h in await lookups(cache, "gpt-4o")] == [1, 4, 3]
    # The cleared model caches again, in its new generation, for both workers.
    await fill(a, "gpt-4o-mini")
    await asyncio.sleep(0.3)
    assert [h.phase if h else None for h in await lookups(b, "gpt-4o-mini")] == [1, 4, 3]


async def test_a_key_clear_and_a_full_clear(workers: list[MetaCache]) -> None:
    a, b = workers
    for tenant in ("key-a", "key-b"):
        r = req(chat(QUESTION), tenant=tenant)
        assert await a.lookup(r) is None
        await a.store(r, answer(tenant))
    await ops.clear(b, ops.ClearRequest(key="key-a"), ROUTES)

    async def a_gone() -> bool:
        return await a.lookup(req(chat(QUESTION), tenant="key-a")) is None

    await until(a_gone)
    assert await a.lookup(req(chat(QUESTION), tenant="key-b")) is not None
    report = await ops.clear(b, ops.ClearRequest(), ROUTES)
    assert report.scopes == ["*"] and report.deleted
    assert await b.shared_store.count("gw:c:e:") == 0  # everything: the entries are deleted too

    async def a_empty() -> bool:
        return await a.lookup(req(chat(QUESTION), tenant="key-b")) is None

    await until(a_empty)


async def test_an_answer_fetched_across_a_clear_is_not_served_after_it(workers: list[MetaCache]) -> None:
    a, b = workers
    r = req(chat(QUESTION, model="gpt-4o"))
    assert await a.lookup(r) is None  # the miss goes upstream ...
    await ops.clear(b, ops.ClearRequest(model="gpt-4o"), ROUTES)  # ... a clear happens meanwhile ...
    await until(lambda: _changed(a))
    await a.store(r, answer("fetched before the clear"))  # ... and the answer comes back
    assert await a.lookup(req(chat(QUESTION, model="gpt-4o"))) is None
    assert await b.lookup(req(chat(QUESTION, model="gpt-4o"))) is None


async def _changed(cache: MetaCache) -> bool:
    return "model:gpt-4o" in cache.generations.scopes


async def test_stats_count_entries_and_report_rates_bound_and_clears(workers: list[MetaCache]) -> None:
    a, b = workers
    await fill(a, "gpt-4o")
    assert await b.lookup(req(chat(QUESTION, model="gpt-4o"))) is not None
    assert await b.lookup(req(chat("Something never asked", model="gpt-4o"))) is None
    await ops.clear(b, ops.ClearRequest(model="gpt-4o-mini"), ROUTES)
    report = await ops.stats(b, b.settings, b.verifier, ops.rates_from_stats(b.stats), (len(b.index), b.index.nbytes))
    assert report.entries == 2
    assert report.rates.lookups == 2 and report.rates.hits == 1 and report.rates.hit_rate == 0.5
    assert report.rates.phases["intent"].hits == 1 and report.rates.phases["intent"].hit_rate == 0.5
    assert report.bound.max_wrong_rate == 0.01
    assert {c.scope for c in report.clears} == {"model:gpt-4o-mini", "model:mini"}
    assert report.memory.store_bytes and report.memory.store_bytes > 0
    text = ops.render(report)
    assert "entries        2" in text and "intent" in text and "model:mini" in text
