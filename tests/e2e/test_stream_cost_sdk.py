"""The streamed answer's cost, read through the official SDKs (which keep unknown fields and parse
the stream as before), equal to the audit log's figure; both protocols, passed through and translated."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml

from .conftest import API_KEY, MASTER_KEY, Proc, start_mock, start_process


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("stream-cost")
    mock = start_mock(tmp, "mock")
    cfg = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"}]},
        "store": {"embedded_path": str(tmp / "store.db")},
        "cache": {"enabled": False},
        "providers": {"oa": {"kind": "openai", "base_url": mock.url + "/v1"},
                      "an": {"kind": "anthropic", "base_url": mock.url}},
        "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oa"}]},
                   {"name": "claude-sonnet-4-5", "deployments": [{"provider": "an"}]},
                   {"name": "gpt-via-claude", "deployments": [{"provider": "an", "model": "claude-sonnet-4-5"}]},
                   {"name": "claude-via-gpt", "deployments": [{"provider": "oa", "model": "gpt-4o-mini"}]}],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = start_process(["serve", "--config", str(path), "--workers", "1"], tmp / "gateway.log",
                      env={"E2E_API_KEY": API_KEY, "GATEWAY_MASTER_KEY": MASTER_KEY}, ready_path="/readyz")
    yield p
    p.stop()
    mock.stop()


def ledger_cost(gw: Proc, request_id: str, timeout: float = 30.0) -> float:
    """The audit entry's cost: written in batches after the answer, so poll until it is there."""
    deadline = time.monotonic() + timeout
    while True:
        req = urllib.request.Request(f"{gw.url}/api/vas/logs?request_id={request_id}",
                                     headers={"authorization": f"Bearer {MASTER_KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = json.loads(resp.read())["data"]
        if data:
            return float(data[0]["cost_usd"])
        assert time.monotonic() < deadline, f"no audit entry for {request_id}"
        time.sleep(0.1)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-via-claude"])
def test_openai_sdk_reads_the_cost_on_the_usage_chunk(gw: Proc, model: str) -> None:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "What does a stream cost?"}])
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a mock answer to: What does a stream cost?"
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens > 0  # the SDK parsed it as before
    extra: dict[str, Any] = last.model_extra or {}
    cost = extra["x_gateway"]["cost_usd"]
    assert all("x_gateway" not in (c.model_extra or {}) for c in chunks[:-1])
    assert cost > 0 and cost == pytest.approx(ledger_cost(gw, raw.headers["x-gateway-request-id"]), abs=1e-8)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-via-gpt"])
def test_anthropic_sdk_reads_the_cost_on_message_delta(gw: Proc, model: str) -> None:
    with anthropic.Anthropic(base_url=gw.url, api_key=API_KEY, max_retries=0, timeout=30) as client:
        with client.messages.stream(model=model, max_tokens=100,
                                    messages=[{"role": "user", "content": "And this one?"}]) as stream:
            events = list(stream)
            message = stream.get_final_message()
            request_id = stream.response.headers["x-gateway-request-id"]
    assert message.content[0].type == "text" and message.content[0].text.startswith("This is a mock answer")
    assert message.usage.output_tokens > 0 and message.stop_reason == "end_turn"  # accumulated as before
    [delta] = [e for e in events if e.type == "message_delta"]
    cost = (delta.model_extra or {})["x_gateway"]["cost_usd"]
    assert cost > 0 and cost == pytest.approx(ledger_cost(gw, request_id), abs=1e-8)
