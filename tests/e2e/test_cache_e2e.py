"""The MetaCache end to end: real Granian workers, real Redis, the real model, the official SDKs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from tests.conftest import RedisServer, own_redis_server

from .conftest import API_KEY, Proc, mock_requests, start_mock, start_process


def _config(path: Path, mock: Proc, redis_url: str | None) -> Path:
    cfg = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"},
                                           {"id": "team-b", "key_env": "E2E_API_KEY_B"}]},
        "store": {"redis_url": redis_url or "", "embedded_path": str(path.parent / "cache-store.db")},
        # Phase 4 always runs here: a loaded CI machine must not turn it into a load-shedding skip.
        "cache": {"embed_budget_ms": 10_000, "verify_budget_ms": 10_000, "busy_lag_ms": 0},
        "providers": {"up": {"kind": "compatible", "base_url": mock.url},
                      "claude": {"kind": "anthropic", "base_url": mock.url}},
        "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "up"}]},
                   {"name": "claude-house", "deployments": [{"provider": "claude"}]},
                   {"name": "shared-model", "deployments": [{"provider": "up"}], "cache": {"scope": "shared"}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


ENV = {"E2E_API_KEY": API_KEY, "E2E_API_KEY_B": "sk-team-b"}


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[tuple[Proc, Proc, Proc]]:
    """One mock and two gateway instances (2 workers each) sharing one real Redis, like two pods."""
    tmp = tmp_path_factory.mktemp("cache")
    redis_server.flush()
    mock = start_mock(tmp, "mock")
    gw_a = start_process(["serve", "--config", str(_config(tmp / "a.yaml", mock, redis_server.url)),
                          "--workers", "2"], tmp / "a.log", env=ENV, ready_path="/readyz")
    gw_b = start_process(["serve", "--config", str(_config(tmp / "b.yaml", mock, redis_server.url)),
                          "--workers", "2"], tmp / "b.log", env=ENV, ready_path="/readyz")
    yield mock, gw_a, gw_b
    for p in (gw_a, gw_b, mock):
        p.stop()


def _client(gw: Proc, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def _ask(client: openai.OpenAI, text: str, model: str = "gpt-4o-mini") -> tuple[str, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, temperature=0, messages=[{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": text}])
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def _settle() -> None:
    """Write-back happens after the answer went out; other workers see it on their next sync."""
    time.sleep(0.5)


def _upstream_calls(mock: Proc, text: str) -> int:
    return sum(1 for r in mock_requests(mock)
               if any(m.get("content") == text for m in r["body"].get("messages", []) if isinstance(m, dict)))


def test_phase1_phase3_hits_and_headers(cache_env: tuple[Proc, Proc, Proc]) -> None:
    mock, gw, _ = cache_env
    with _client(gw) as c:
        first, h1 = _ask(c, "What is the boiling point of water at sea level?")
        assert "x-cache-hit" not in h1
        _settle()
        again, h2 = _ask(c, "What is the boiling point of water at sea level?")
        assert again == first and h2["x-cache-hit"] == "true" and h2["x-cache-similarity"] == "1.0000"
        assert int(h2["x-tokens-saved"]) > 0
        rephrased, h3 = _ask(c, "what is the BOILING point of water at sea level")
        assert rephrased == first and h3["x-cache-hit"] == "true" and h3["x-cache-phase"] == "1"
    assert _upstream_calls(mock, "What is the boiling point of water at sea level?") == 1


def test_phase4_semantic_hit_and_guard_veto(cache_env: tuple[Proc, Proc, Proc]) -> None:
    _, gw, _ = cache_env
    with _client(gw) as c:
        first, _ = _ask(c, "Explain how photosynthesis works")
        _settle()
        para, h = _ask(c, "How does photosynthesis work?")
        assert para == first and h["x-cache-phase"] == "4" and float(h["x-cache-similarity"]) >= 0.90
        # Looks alike, asks something else: the verifier vetoes, the provider answers.
        _ask(c, "How do I enable two-factor authentication on my account?")
        _settle()
        other, h = _ask(c, "How do I disable two-factor authentication on my account?")
        assert "x-cache-hit" not in h and other.endswith("disable two-factor authentication on my account?")


def test_partitions_and_scope(cache_env: tuple[Proc, Proc, Proc]) -> None:
    _, gw, _ = cache_env
    with _client(gw) as a, _client(gw, "sk-team-b") as b:
        _ask(a, "Name three prime numbers below ten.")
        _settle()
        assert "x-cache-hit" not in _ask(b, "Name three prime numbers below ten.")[1]  # per-key scope
        _ask(a, "Name three prime numbers below ten.", model="shared-model")
        _settle()
        assert _ask(b, "Name three prime numbers below ten.", model="shared-model")[1]["x-cache-hit"] == "true"
        msgs = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name three prime numbers below ten."}]
        raw = a.chat.completions.with_raw_response.create(  # another temperature: another partition
            model="gpt-4o-mini", temperature=0.7, messages=msgs)  # type: ignore[arg-type]
        assert "x-cache-hit" not in raw.headers
        raw = a.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0, extra_headers={"cache-control": "no-cache"},
            messages=[{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "Name three prime numbers below ten."}])
        assert "x-cache-hit" not in raw.headers


def test_streamed_hits_replay_and_streamed_misses_are_written_back(cache_env: tuple[Proc, Proc, Proc]) -> None:
    mock, gw, _ = cache_env
    q = "Describe the water cycle in one sentence."
    msgs = [{"role": "user", "content": q}]
    with _client(gw) as c:
        streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="gpt-4o-mini", temperature=0, messages=msgs, stream=True) if ch.choices)
        _settle()
        plain = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", temperature=0, messages=msgs)
        assert plain.headers["x-cache-hit"] == "true"
        assert plain.parse().choices[0].message.content == streamed.strip()
        usage = None
        text = []
        for ch in c.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=msgs, stream=True,
                                            stream_options={"include_usage": True}):
            if ch.choices:
                text.append(ch.choices[0].delta.content or "")
            usage = ch.usage or usage
        assert "".join(text) == streamed.strip() and usage is not None
    assert sum(1 for r in mock_requests(mock) if r["body"].get("messages") == msgs) == 1


def test_anthropic_streamed_hit(cache_env: tuple[Proc, Proc, Proc]) -> None:
    mock, gw, _ = cache_env
    with anthropic.Anthropic(base_url=gw.url, api_key=API_KEY, max_retries=0) as c:
        kw = {"model": "claude-house", "max_tokens": 200, "extra_body": {"temperature": 0},
              "messages": [{"role": "user", "content": "Give me a haiku about caching."}]}
        first = c.messages.create(**kw)  # type: ignore[call-overload]
        _settle()
        with c.messages.stream(**kw) as s:  # type: ignore[arg-type]
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == first.content[0].text and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert sum(1 for r in mock_requests(mock) if r["path"] == "/v1/messages"
               and r["body"]["messages"][0]["content"] == "Give me a haiku about caching.") == 1


def test_two_instances_share_entries_and_survive_one_stopping(cache_env: tuple[Proc, Proc, Proc]) -> None:
    mock, gw_a, gw_b = cache_env
    with _client(gw_a) as a, _client(gw_b) as b:
        first, _ = _ask(a, "Which planet has the most moons?")
        _settle()
        same, h = _ask(b, "Which planet has the most moons?")
        assert same == first and h["x-cache-hit"] == "true"
        _ask(a, "Explain how a rainbow forms")
        _settle()
        _, h = _ask(b, "How does a rainbow form?")
        assert h.get("x-cache-hit") == "true" and h["x-cache-phase"] in {"2", "4"}
    assert _upstream_calls(mock, "Which planet has the most moons?") == 1


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_single_flight_across_workers_and_instances(tmp_path: Path, redis_server: RedisServer, backend: str) -> None:
    # Redis: two instances of 2 workers each (two pods); embedded: one instance of 2 workers. Either
    # way the 20 identical requests land on several workers, and one of them goes upstream
    # (with cache.flight_wait_s: 0, 2-5 of them did).
    mock = start_mock(tmp_path, "xf-mock", "--latency-ms", "600")
    url = redis_server.url if backend == "redis" else None
    count = 2 if backend == "redis" else 1
    gws = [start_process(["serve", "--config", str(_config(tmp_path / f"xf{i}.yaml", mock, url)), "--workers", "2"],
                         tmp_path / f"xf{i}.log", env=ENV, ready_path="/readyz") for i in range(count)]
    question = f"fleet-wide single flight ({backend})"
    try:
        async def burst() -> list[tuple[str, str | None]]:
            clients = [openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
                       for gw in gws]
            msgs = [{"role": "user", "content": question}]

            async def one(i: int) -> tuple[str, str | None]:
                # A fresh connection each: the workers of an instance share the load between them.
                raw = await clients[i % len(clients)].with_options(
                    default_headers={"connection": "close"}).chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", temperature=0, messages=msgs)  # type: ignore[arg-type]
                return raw.parse().choices[0].message.content or "", raw.headers.get("x-cache-hit")

            try:
                return list(await asyncio.gather(*(one(i) for i in range(20))))
            finally:
                for c in clients:
                    await c.close()

        answers = asyncio.run(burst())
        assert len({a for a, _ in answers}) == 1 and len(answers) == 20
        assert sum(h == "true" for _, h in answers) == 19
        assert _upstream_calls(mock, question) == 1
    finally:
        for gw in gws:
            gw.stop()
        mock.stop()


def test_single_flight_one_upstream_call_for_20_concurrent(tmp_path: Path, redis_server: RedisServer) -> None:
    mock = start_mock(tmp_path, "sf-mock", "--latency-ms", "400")
    gw = start_process(["serve", "--config", str(_config(tmp_path / "sf.yaml", mock, redis_server.url)),
                        "--workers", "1"], tmp_path / "sf.log", env=ENV, ready_path="/readyz")
    try:
        async def burst() -> list[str]:
            async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as c:
                msgs = [{"role": "user", "content": "single flight question"}]
                rs = await asyncio.gather(*(c.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                                                      messages=msgs) for _ in range(20)))  # type: ignore[arg-type]
                return [r.choices[0].message.content or "" for r in rs]

        answers = asyncio.run(burst())
        assert len(set(answers)) == 1 and len(answers) == 20
        assert _upstream_calls(mock, "single flight question") == 1
    finally:
        gw.stop()
        mock.stop()


def test_redis_outage_every_request_answered(tmp_path: Path) -> None:
    servers = own_redis_server("gw-redis-cache-outage-")
    redis = next(servers)
    mock = start_mock(tmp_path, "out-mock")
    gw = start_process(["serve", "--config", str(_config(tmp_path / "out.yaml", mock, redis.url)),
                        "--workers", "2"], tmp_path / "out.log", env=ENV, ready_path="/readyz")
    try:
        with _client(gw) as c:
            _ask(c, "Outage question one?")
            _settle()
            assert _ask(c, "Outage question one?")[1]["x-cache-hit"] == "true"
            redis.stop()
            for i in range(10):
                text, _ = _ask(c, f"Asked while Redis is down {i}?")
                assert text.endswith(f"down {i}?")
            assert gw.get_json("/readyz")["degraded"].get("store")
            redis.start()
            time.sleep(2.5)  # the breaker probes again within 2 s
            _ask(c, "After the outage?")
            _settle()
            assert _ask(c, "After the outage?")[1]["x-cache-hit"] == "true"
    finally:
        gw.stop()
        mock.stop()
        servers.close()


def test_models_that_fail_to_load_degrade_to_the_exact_phases(tmp_path: Path) -> None:
    """Both ML models missing: the gateway still starts, serves phases 1-3, and /readyz says why."""
    mock = start_mock(tmp_path, "nomodel-mock")
    cfg = yaml.safe_load(_config(tmp_path / "nomodel.yaml", mock, None).read_text())
    cfg["cache"].update({"verifier_path": str(tmp_path / "absent.int8.onnx"),
                         "embed_model_path": str(tmp_path / "absent-embedder.onnx")})
    (tmp_path / "nomodel.yaml").write_text(yaml.safe_dump(cfg))
    gw = start_process(["serve", "--config", str(tmp_path / "nomodel.yaml"), "--workers", "1"],
                       tmp_path / "nomodel.log", env=ENV, ready_path="/readyz")
    try:
        degraded = gw.get_json("/readyz")["degraded"]
        assert "phase 4" in degraded["embedding"] and "MLP" in degraded["verifier"]
        with _client(gw) as c:
            first, _ = _ask(c, "What is the tallest mountain in Africa?")
            _settle()
            again, h = _ask(c, "What is the tallest mountain in Africa?")
            assert again == first and h["x-cache-hit"] == "true" and h["x-cache-phase"] in {"1", "3"}
            _, h = _ask(c, "Which mountain is the highest in Africa?")  # a paraphrase: phase 4 is off
            assert h.get("x-cache-phase") != "4"
    finally:
        gw.stop()
        mock.stop()


def test_a_looser_bound_takes_the_cross_encoder_and_serves_a_paraphrase(tmp_path: Path) -> None:
    """cache.max_wrong_rate 5%: `auto` takes the cross-encoder (more validation recall there), in real workers."""
    mock = start_mock(tmp_path, "cross-mock")
    cfg = yaml.safe_load(_config(tmp_path / "cross.yaml", mock, None).read_text())
    cfg["cache"]["max_wrong_rate"] = 0.05
    (tmp_path / "cross.yaml").write_text(yaml.safe_dump(cfg))
    gw = start_process(["serve", "--config", str(tmp_path / "cross.yaml"), "--workers", "1"],
                       tmp_path / "cross.log", env={**ENV, "GATEWAY_MASTER_KEY": "sk-master-e2e"},
                       ready_path="/readyz")
    try:
        assert gw.get_json("/readyz")["degraded"] == {}
        bound = gw.get_json("/admin/cache/stats", {"authorization": "Bearer sk-master-e2e"})["bound"]
        assert bound["verifier"] == "cross" and bound["max_wrong_rate"] == 0.05
        with _client(gw) as c:
            first, _ = _ask(c, "Explain how a rainbow forms")
            _settle()
            para, h = _ask(c, "How does a rainbow form?")
            assert para == first and h["x-cache-phase"] == "4"
            _ask(c, "What is the best laptop for programming?")
            _settle()
            other, h = _ask(c, "What is the best laptop for gaming?")  # a neighbour the model refuses
            assert "x-cache-hit" not in h and other.endswith("laptop for gaming?")
    finally:
        gw.stop()
        mock.stop()
