"""The official openai SDK against real Granian workers and the mock upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from .conftest import API_KEY, Proc, last_mock_request, mock_requests


@pytest.fixture
def client(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20) as c:
        yield c


def test_plain_chat(client: openai.OpenAI, mock_upstream: Proc) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert resp.choices[0].message.content == "This is a mock answer to: hello"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    sent = last_mock_request(mock_upstream, "/v1/chat/completions")
    # Our key stays at the gateway; the provider's key goes upstream.
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"


def test_request_headers_passed_back(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "headers"}])
    assert raw.headers["x-request-id"].startswith("req_mock")
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    assert raw.headers["x-gateway-request-id"]


def test_streamed_chat_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True})
    text = []
    usage = None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text).strip() == "This is a mock answer to: stream me"
    assert usage is not None and usage.completion_tokens > 0


TOOLS = [{"type": "function", "function": {
    "name": "search_docs", "description": "Search the docs",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}}}]


def test_streamed_tool_call_deltas_reassemble(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "find pricing"}], tools=TOOLS, stream=True)
    name, args, finish = "", "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            if call.function and call.function.name:
                name = call.function.name
            if call.function and call.function.arguments:
                args += call.function.arguments
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert name == "search_docs"
    assert json.loads(args) == {"query": "find pricing", "limit": 3}
    assert finish == "tool_calls"


def test_n_and_response_format_pass_through(client: openai.OpenAI, mock_upstream: Proc) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o-mini", n=2, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "two please"}])
    assert len(resp.choices) == 2
    sent = last_mock_request(mock_upstream, "/v1/chat/completions")["body"]
    assert sent["n"] == 2 and sent["response_format"] == {"type": "json_object"}


def test_unknown_field_arrives_intact(client: openai.OpenAI, mock_upstream: Proc) -> None:
    custom = {"nested": {"list": [1, 2.5, "x", None], "flag": True}, "unicode": "żółw 🐢"}
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "unknown"}],
                                   extra_body={"my_vendor_field": custom})
    sent = last_mock_request(mock_upstream, "/v1/chat/completions")["body"]
    assert sent["my_vendor_field"] == custom


def test_alias_and_deployment_model_rewrite(client: openai.OpenAI, mock_upstream: Proc) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "deployment"}])
    assert last_mock_request(mock_upstream, "/v1/chat/completions")["body"]["model"] == "gpt-4o-2024-08-06"
    resp = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "alias"}])
    assert resp.choices[0].message.content == "This is a mock answer to: alias"


def test_completions_embeddings_models(client: openai.OpenAI) -> None:
    comp = client.completions.create(model="gpt-4o-mini", prompt="Say hi")
    assert comp.choices[0].text == "This is a mock answer to: Say hi"
    emb = client.embeddings.create(model="gpt-4o-mini", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 16
    names = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "fast", "claude-house", "flaky"} <= names


def test_responses_api_plain_and_streamed(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="gpt-4o-mini", input="what is up")
    assert resp.output_text == "This is a mock answer to: what is up"
    deltas = []
    with client.responses.stream(model="gpt-4o-mini", input="stream up") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "".join(deltas).strip() == "This is a mock answer to: stream up"


def test_claude_through_openai_sdk(client: openai.OpenAI, mock_upstream: Proc) -> None:
    resp = client.chat.completions.create(
        model="claude-house", max_tokens=300,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi claude"}])
    assert resp.choices[0].message.content == "This is a mock answer to: hi claude"
    assert resp.choices[0].finish_reason == "stop"
    sent = last_mock_request(mock_upstream, "/v1/messages")
    assert sent["body"]["system"] == "Be brief."
    assert sent["headers"]["x-api-key"] == "sk-upstream-secret"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    # Streamed, with a tool call translated from Anthropic events.
    stream = client.chat.completions.create(
        model="claude-house", messages=[{"role": "user", "content": "use the tool"}], tools=TOOLS,
        stream=True, stream_options={"include_usage": True})
    name, args, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            name = name or (call.function.name or "" if call.function else "")
            args += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "search_docs" and json.loads(args)["query"] == "use the tool"
    assert finish == "tool_calls" and usage is not None and usage.prompt_tokens > 0


def test_tool_result_round_trip_to_claude(client: openai.OpenAI, mock_upstream: Proc) -> None:
    resp = client.chat.completions.create(model="claude-house", tools=TOOLS, messages=[
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search_docs", "arguments": '{"query":"x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42 results"},
    ])
    assert resp.choices[0].finish_reason == "stop"
    sent = last_mock_request(mock_upstream, "/v1/messages")["body"]["messages"]
    assert sent[1]["content"][0] == {"type": "tool_use", "id": "call_1", "name": "search_docs",
                                     "input": {"query": "x"}}
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["content"] == "42 results"


def test_upstream_errors_surface_as_sdk_exceptions(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "fail"}]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_body={"mock": {"status": 429}})
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_body={"mock": {"status": 500}})
    assert exc.value.status_code == 500
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_body={"mock": {"status": 400}})
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="slow", messages=msgs)
    assert exc.value.status_code == 504


def test_fallback_to_second_deployment(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "fall back"}])
    assert resp.choices[0].message.content == "This is a mock answer to: fall back"


def test_gateway_errors_in_openai_shape(client: openai.OpenAI, gateway: Proc) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json",
                   headers={"authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"messages": []},
                   headers={"authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"


def test_disconnect_cancels_upstream(gateway: Proc, mock_upstream: Proc) -> None:
    before = mock_upstream.get_json("/_mock/stats")["streams_cancelled"]
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long story"}],
            "mock": {"chunks": 100, "chunk_interval_ms": 50}}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {API_KEY}"}, timeout=10) as r:
        it = r.iter_raw()
        next(it)
        next(it)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if mock_upstream.get_json("/_mock/stats")["streams_cancelled"] > before:
            break
        time.sleep(0.1)
    assert mock_upstream.get_json("/_mock/stats")["streams_cancelled"] == before + 1
    # The worker keeps serving afterwards.
    assert len(mock_requests(mock_upstream)) > 0
    ok = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still here"}]})
    assert ok.status_code == 200
