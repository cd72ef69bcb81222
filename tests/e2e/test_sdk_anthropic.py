"""The official anthropic SDK against real Granian workers and the mock upstream (native /v1/messages)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest

from .conftest import API_KEY, Proc, last_mock_request


@pytest.fixture
def client(gateway: Proc) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=API_KEY, max_retries=0, timeout=20) as c:
        yield c


def test_messages_plain(client: anthropic.Anthropic, mock_upstream: Proc) -> None:
    msg = client.messages.create(model="claude-house", max_tokens=200, system="Be terse.",
                                 messages=[{"role": "user", "content": "hello claude"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "This is a mock answer to: hello claude"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    sent = last_mock_request(mock_upstream, "/v1/messages")
    assert sent["headers"]["x-api-key"] == "sk-upstream-secret"
    assert sent["body"]["system"] == "Be terse."


def test_messages_streamed_events(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="claude-house", max_tokens=200,
                                messages=[{"role": "user", "content": "stream claude"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "This is a mock answer to: stream claude"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_messages_tool_use_streamed(client: anthropic.Anthropic) -> None:
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"query": {"type": "string"}}}}]
    with client.messages.stream(model="claude-house", max_tokens=200, tools=tools,  # type: ignore[arg-type]
                                messages=[{"role": "user", "content": "weather in Oslo"}]) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"query": "weather in Oslo", "limit": 3}
    assert final.stop_reason == "tool_use"


def test_unknown_anthropic_fields_and_beta_header(client: anthropic.Anthropic, mock_upstream: Proc) -> None:
    client.messages.create(model="claude-house", max_tokens=50,
                           messages=[{"role": "user", "content": "beta"}],
                           extra_body={"thinking_budget_custom": {"x": 1}},
                           extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    sent = last_mock_request(mock_upstream, "/v1/messages")
    assert sent["body"]["thinking_budget_custom"] == {"x": 1}
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"


def test_anthropic_errors_in_anthropic_shape(client: anthropic.Anthropic, gateway: Proc) -> None:
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-house", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                               extra_body={"mock": {"status": 429}})
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "error"  # type: ignore[index]
    with anthropic.Anthropic(base_url=gateway.url, api_key="bad", max_retries=0) as bad, \
            pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-house", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    r = httpx.post(gateway.url + "/v1/messages", content=b"[1,2", headers={"x-api-key": API_KEY})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": r.json()["error"]["message"]}}


def test_body_over_limit_is_413(gateway: Proc) -> None:
    big = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * (11 * 1024 * 1024) + b'"}]}'
    r = httpx.post(gateway.url + "/v1/chat/completions", content=big,
                   headers={"authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_health_and_ready(gateway: Proc) -> None:
    assert gateway.get_json("/healthz") == {"status": "alive"}
    ready = gateway.get_json("/readyz")
    assert ready["status"] == "ready" and "primary" in ready["providers"]
