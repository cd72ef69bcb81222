"""The embedder with the real int8 MiniLM model: vectors, batching, the async budget, load failure."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.embed.session import DIM, Embedder


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder()
    yield e
    e.close()


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    vecs = embedder.embed(["How do I reverse a list in Python?", "Best pizza in Naples", "x"])
    assert vecs.shape == (3, DIM)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, DIM)


def test_paraphrase_is_closer_than_unrelated(embedder: Embedder) -> None:
    q, para, other = embedder.embed(
        ["How do I reverse a list in Python?", "What's the way to reverse a Python list?",
         "What is the capital of Australia?"]
    )
    assert float(q @ para) > 0.85
    assert float(q @ para) > float(q @ other) + 0.5


def test_batch_equals_single(embedder: Embedder) -> None:
    texts = ["short", "a much longer sentence that needs padding in the batch, with many words", "mid size"]
    batch = embedder.embed(texts)
    single = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-4)


def test_long_text_is_truncated_not_rejected(embedder: Embedder) -> None:
    assert embedder.embed(["word " * 2000]).shape == (1, DIM)


def test_token_states(embedder: Embedder) -> None:
    (states,) = embedder.embed_with_tokens(["reverse a list"])
    assert states.tokens == ["reverse", "a", "list"]
    assert states.vectors.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(states.vectors, axis=1), 1.0, atol=1e-5)


async def test_embed_one_matches_sync_and_reuses_the_lru(embedder: Embedder) -> None:
    text = "How do I undo the last git commit?"
    vec = await embedder.embed_one(text, budget_ms=2000)
    assert vec is not None
    np.testing.assert_allclose(vec, embedder.embed([text])[0], atol=1e-5)
    before = embedder.stats.embedded
    again = await embedder.embed_one(text, budget_ms=2000)
    assert again is vec  # the write-back gets the lookup's vector, not a second inference
    assert embedder.cached(text) is vec
    assert embedder.stats.embedded == before
    assert not vec.flags.writeable


async def test_saturation_returns_none_without_blocking_the_loop() -> None:
    e = Embedder(max_pending=2, max_batch=1)
    try:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(heartbeat())
        t0 = time.perf_counter()
        calls = (e.embed_one(f"request number {i}", budget_ms=5000) for i in range(30))
        results = await asyncio.gather(*calls)
        beat.cancel()
        refused = sum(r is None for r in results)
        assert refused >= 25  # one running, two queued, the rest refused on the spot
        assert e.stats.saturated == refused
        assert all(r is not None for r in results[:2])
        assert ticks > 0  # the loop kept running while the thread worked
        assert time.perf_counter() - t0 < 2.0
    finally:
        e.close()


async def test_budget_below_the_estimate_is_refused_before_queueing() -> None:
    e = Embedder(expected_ms=50.0)
    try:
        assert await e.embed_one("too little time", budget_ms=10) is None
        assert e.stats.over_budget == 1
        assert e.stats.embedded == 0
    finally:
        e.close()


async def test_a_stale_estimate_is_probed_and_phase_4_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # After a burst the estimate says "too slow"; refusing on it forever would never refresh it.
    monkeypatch.setattr("gateway.embed.session.PROBE_INTERVAL_S", 0.2)
    e = Embedder(expected_ms=500.0)
    try:
        assert await e.embed_one("refused on the stale estimate", budget_ms=5) is None
        await asyncio.sleep(0.25)
        await e.embed_one("the probe", budget_ms=100)  # below the estimate: let in only as the probe
        assert e.stats.probes == 1
        for _ in range(200):  # a loaded machine may miss the 100 ms; the probe still lands
            if e.stats.embedded:
                break
            await asyncio.sleep(0.01)
        assert e.estimate_ms < 100  # the fast probe replaced the stale figure at once
        assert await e.embed_one("admitted again", budget_ms=5000) is not None
        assert e.stats.probes == 1 and e.stats.over_budget in (1, 2)
    finally:
        e.close()


async def test_budget_missed_returns_none_and_still_fills_the_lru() -> None:
    e = Embedder(expected_ms=0.001)  # a wrong, optimistic estimate: the job is queued, then times out
    try:
        text = "a query whose embedding arrives late " * 20
        assert await e.embed_one(text, budget_ms=0.5) is None
        assert e.stats.over_budget == 1
        for _ in range(200):  # the shielded job completes in the thread and is remembered
            if e.cached(text) is not None:
                break
            await asyncio.sleep(0.01)
        assert e.cached(text) is not None
    finally:
        e.close()


async def test_identical_concurrent_texts_are_embedded_once() -> None:
    e = Embedder()
    try:
        results = await asyncio.gather(*(e.embed_one("same text", budget_ms=5000) for _ in range(5)))
        assert all(r is not None for r in results)
        assert e.stats.embedded == 1
    finally:
        e.close()


@pytest.mark.parametrize("nice", [0, 10])
def test_embedding_threads_yield_to_the_event_loop(nice: int) -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    e = Embedder(thread_nice=nice)
    try:
        assert e._pool.submit(niceness).result() == min(19, niceness() + nice)
    finally:
        e.close()


def test_missing_model_returns_none_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.embed.session"):
        assert Embedder.load_or_none(model_path=tmp_path / "absent.onnx") is None
        assert Embedder.load_or_none(tokenizer_path=tmp_path / "absent.json") is None
    assert sum("phase 4" in r.getMessage() for r in caplog.records) == 2
