"""`/v1/embeddings` answered from the exact cache on repeat, through the official openai SDK against
real Granian workers and the mock; every output-changing parameter and the key partition it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from .conftest import API_KEY, Proc, mock_requests, start_mock, start_process

KEY_B = "sk-team-b-embeddings"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc, Path]]:
    tmp = tmp_path_factory.mktemp("emb-cache")
    mock = start_mock(tmp, "mock")
    store = tmp / "store.db"
    cfg = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"},
                                           {"id": "team-b", "key_env": "E2E_API_KEY_B"}]},
        "store": {"embedded_path": str(store)},
        "providers": {"up": {"kind": "openai", "base_url": mock.url + "/v1"}},
        "models": [{"name": "embed-a", "deployments": [{"provider": "up", "model": "mock-embed-a"}]},
                   {"name": "embed-b", "deployments": [{"provider": "up", "model": "mock-embed-b"}]}],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    gw = start_process(["serve", "--config", str(path), "--workers", "2"], tmp / "gateway.log",
                       env={"E2E_API_KEY": API_KEY, "E2E_API_KEY_B": KEY_B}, ready_path="/readyz")
    yield mock, gw, store
    gw.stop()
    mock.stop()


def entries(store: Path) -> int:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute("SELECT count(*) FROM kv WHERE key LIKE 'gw:c:e:%'").fetchone()[0])


def wait_entries(store: Path, n: int, timeout: float = 30.0) -> None:
    """The write-back runs after the answer went out: its row in the shared store is the signal."""
    deadline = time.monotonic() + timeout
    while entries(store) < n:
        assert time.monotonic() < deadline, f"fewer than {n} cache entries after {timeout}s"
        time.sleep(0.05)


def upstream_embeddings(mock: Proc) -> int:
    return sum(1 for r in mock_requests(mock) if r["path"].endswith("/embeddings"))


def embed(client: openai.OpenAI, **kw: Any) -> tuple[list[list[float]], dict[str, str]]:
    kw.setdefault("model", "embed-a")
    kw.setdefault("input", "the quick brown fox")
    raw = client.embeddings.with_raw_response.create(**kw)
    return [d.embedding for d in raw.parse().data], dict(raw.headers)


def test_repeat_is_a_hit_and_every_parameter_partitions(env: tuple[Proc, Proc, Path]) -> None:
    mock, gw, store = env
    a = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20)
    b = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_B, max_retries=0, timeout=20)
    calls, stored = upstream_embeddings(mock), entries(store)

    first, h1 = embed(a)
    assert "x-cache-hit" not in h1 and upstream_embeddings(mock) == calls + 1
    wait_entries(store, stored + 1)
    again, h2 = embed(a)
    assert h2["x-cache-hit"] == "true" and h2["x-cache-phase"] == "3" and h2["x-gateway-cost-usd"] == "0"
    assert int(h2["x-tokens-saved"]) > 0
    assert again == first and len(first[0]) == 16
    assert upstream_embeddings(mock) == calls + 1  # the mock saw one call for the two requests

    # Each of these changes the answer (or whose it is): a miss, one upstream call each, then stored.
    variants: list[tuple[openai.OpenAI, dict[str, Any]]] = [
        (a, {"model": "embed-b"}), (a, {"dimensions": 8}), (a, {"encoding_format": "float"}),
        (a, {"input": "the quick brown fox!"}), (a, {"input": ["the quick brown fox"]}), (b, {}),
    ]
    for n, (client, kw) in enumerate(variants, start=1):
        vectors, headers = embed(client, **kw)
        assert "x-cache-hit" not in headers, kw
        assert upstream_embeddings(mock) == calls + 1 + n, kw
        if "dimensions" in kw:
            assert len(vectors[0]) == 8
        wait_entries(store, stored + 1 + n)
    # And each variant is a hit of its own on repeat.
    for client, kw in variants:
        assert embed(client, **kw)[1].get("x-cache-hit") == "true", kw
    assert upstream_embeddings(mock) == calls + 1 + len(variants)
    a.close()
    b.close()
