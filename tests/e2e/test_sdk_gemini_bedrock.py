"""The official openai and anthropic SDKs through real Granian workers to the mock's Gemini and
Bedrock modes: plain, streamed, tool calls, usage and the cost header, SigV4 checked by the mock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from gateway.costs.prices import PriceTable, price_tokens
from gateway.protocol.usage import parse_usage
from tests.conftest import free_port

from .conftest import API_KEY, Proc, mock_requests, start_process

AWS_SECRET = "mock-aws-secret-key"
GEMINI_KEY = "gemini-upstream-key"
FLASH = "gemini-2.5-flash"
CLAUDE_ON_BEDROCK = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA = "amazon.nova-pro-v1:0"
TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "description": "Weather for a city",
                         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def native_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("native")
    p = start_process(["mock", "--latency-ms", "5", "--stream-chunks", "4"], tmp / "mock.log",
                      env={"GATEWAY_MOCK_AWS_SECRET_ACCESS_KEY": AWS_SECRET})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def native_gateway(tmp_path_factory: pytest.TempPathFactory, native_mock: Proc) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("native-gw")
    cfg = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"}]},
        "retries": {"attempts": 0},
        "store": {"embedded_path": str(tmp / "store.db")},
        "providers": {
            "gem": {"kind": "gemini", "base_url": native_mock.url, "api_key_env": "E2E_GEMINI_KEY"},
            "gem-nokey": {"kind": "gemini", "base_url": native_mock.url},
            "bed": {"kind": "bedrock", "base_url": native_mock.url, "region": "us-east-1"},
            "bed-wrong": {"kind": "bedrock", "base_url": native_mock.url, "region": "us-east-1",
                          "aws_secret_access_key_env": "E2E_WRONG_SECRET"},
        },
        "models": [
            {"name": "flash", "deployments": [{"provider": "gem", "model": FLASH}]},
            {"name": "claude-bedrock", "deployments": [{"provider": "bed", "model": CLAUDE_ON_BEDROCK}]},
            {"name": "nova", "deployments": [{"provider": "bed", "model": NOVA}]},
            {"name": "nova-wrong-key", "deployments": [{"provider": "bed-wrong", "model": NOVA}]},
            {"name": "flash-nokey", "deployments": [{"provider": "gem-nokey", "model": FLASH}]},
            {"name": "flash-out", "deployments": [{"provider": "gem", "model": FLASH}]},
            {"name": "nova-out", "deployments": [{"provider": "bed", "model": NOVA}]},
        ],
        # Output policies see what the client reads, whatever wire the provider answered in.
        "governance": {"policies": {
            r: [{"name": "out-pii", "kind": "pii", "action": "redact", "on": "output"},
                {"name": "out-deny", "kind": "deny", "patterns": [r"forbidden[- ]topic"], "on": "output"}]
            for r in ("flash-out", "nova-out")}},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"E2E_API_KEY": API_KEY, "E2E_GEMINI_KEY": GEMINI_KEY, "AWS_ACCESS_KEY_ID": "AKIDMOCKEXAMPLE",
           "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": "mock-session-token",
           "E2E_WRONG_SECRET": "not-the-secret"}
    p = start_process(["serve", "--config", str(path), "--workers", "2"], tmp / "gateway.log", env=env,
                      ready_path="/readyz", port=free_port())
    yield p
    p.stop()
    log = (tmp / "gateway.log").read_text()
    assert AWS_SECRET not in log and GEMINI_KEY not in log  # secrets never reach the logs


@pytest.fixture
def oai(native_gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=native_gateway.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def claude(native_gateway: Proc) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=native_gateway.url, api_key=API_KEY, max_retries=0, timeout=30) as c:
        yield c


def _last(mock: Proc, fragment: str) -> dict[str, Any]:
    for req in reversed(mock_requests(mock)):
        if fragment in req["path"]:
            return req
    raise AssertionError(f"the mock received no request for {fragment}")


def _cost(model: str, usage: dict[str, Any]) -> float:
    found = PriceTable().lookup(model)
    parsed = parse_usage(usage)
    assert found is not None and parsed is not None
    return price_tokens(parsed, found[1])


# ------------------------------------------------------------------------------------------- Gemini


def test_gemini_from_openai_plain_with_usage_and_cost(oai: openai.OpenAI, native_mock: Proc) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="flash", messages=[{"role": "system", "content": "Be terse."},
                                 {"role": "user", "content": "hello gemini"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "This is a mock answer to: hello gemini"
    assert resp.choices[0].finish_reason == "stop"
    sent = _last(native_mock, ":generateContent")
    assert sent["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY and "authorization" not in sent["headers"]
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    meta = sent["usage"]
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == meta["promptTokenCount"]
    assert resp.usage.completion_tokens == meta["candidatesTokenCount"] + meta["thoughtsTokenCount"]
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(_cost(FLASH, meta), abs=1e-8)


def test_gemini_from_openai_streamed(oai: openai.OpenAI, native_mock: Proc) -> None:
    stream = oai.chat.completions.create(model="flash", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "stream gemini"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "This is a mock answer to: stream gemini"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert _last(native_mock, ":streamGenerateContent")["path"].endswith(":streamGenerateContent")


def test_gemini_from_openai_tool_round_trip(oai: openai.OpenAI, native_mock: Proc) -> None:
    first = oai.chat.completions.create(model="flash", tools=TOOLS,
                                        messages=[{"role": "user", "content": "weather in Paris"}])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["query"] == "weather in Paris"  # type: ignore[union-attr]
    second = oai.chat.completions.create(model="flash", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
    assert second.choices[0].finish_reason == "stop"
    parts = _last(native_mock, ":generateContent")["body"]["contents"][-1]["parts"]
    assert parts == [{"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}}]


def test_gemini_from_anthropic_plain_streamed_and_tools(claude: anthropic.Anthropic, native_mock: Proc) -> None:
    msg = claude.messages.create(model="flash", max_tokens=200, system="Be terse.",
                                 messages=[{"role": "user", "content": "hello from claude sdk"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "This is a mock answer to: hello from claude sdk"
    meta = _last(native_mock, ":generateContent")["usage"]
    assert msg.usage.input_tokens == meta["promptTokenCount"]
    assert msg.usage.output_tokens == meta["candidatesTokenCount"] + meta["thoughtsTokenCount"]
    with claude.messages.stream(model="flash", max_tokens=200,
                                messages=[{"role": "user", "content": "stream via claude"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "This is a mock answer to: stream via claude"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    with claude.messages.stream(model="flash", max_tokens=200, tools=ANTHROPIC_TOOLS,
                                messages=[{"role": "user", "content": "weather in Rome"}]) as stream:
        final = stream.get_final_message()
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and use.name == "get_weather"
    assert use.input == {"query": "weather in Rome", "limit": 3}
    # The mock, like Gemini 3, refuses a function call sent back without its thought signature.
    second = claude.messages.create(model="flash", max_tokens=200, tools=ANTHROPIC_TOOLS, messages=[
        {"role": "user", "content": "weather in Rome"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C"}]}])
    assert second.stop_reason == "end_turn"
    parts = _last(native_mock, ":generateContent")["body"]["contents"][-1]["parts"]
    assert parts == [{"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}}]
    assert claude.messages.count_tokens(model="flash", messages=[{"role": "user", "content": "count me"}]) \
        .input_tokens > 0


# ------------------------------------------------------------------------------------------ Bedrock


def test_bedrock_from_openai_plain_signed_with_usage_and_cost(oai: openai.OpenAI, native_mock: Proc) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-bedrock", max_tokens=300, messages=[{"role": "user", "content": "hello bedrock"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "This is a mock answer to: hello bedrock"
    sent = _last(native_mock, "/converse")
    assert sent["path"] == f"/model/{CLAUDE_ON_BEDROCK}/converse"  # as Granian decodes it; sent as %3A
    assert sent["signature_ok"] is True  # the mock recomputed the SigV4 signature with the secret
    assert sent["headers"]["x-amz-security-token"] == "mock-session-token"
    assert sent["body"]["inferenceConfig"] == {"maxTokens": 300}
    usage = sent["usage"]
    assert resp.usage is not None and resp.usage.completion_tokens == usage["outputTokens"]
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(_cost(CLAUDE_ON_BEDROCK, usage), abs=1e-8)
    assert float(raw.headers["x-gateway-cost-usd"]) > 0


def test_bedrock_from_openai_streamed_event_stream(oai: openai.OpenAI, native_mock: Proc) -> None:
    stream = oai.chat.completions.create(model="nova", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "stream bedrock"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "This is a mock answer to: stream bedrock"
    assert chunks[-1].usage is not None
    sent = _last(native_mock, "/converse-stream")
    assert sent["signature_ok"] is True
    assert chunks[-1].usage.completion_tokens == sent["usage"]["outputTokens"]


def test_bedrock_from_openai_streamed_tool_call(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model="nova", stream=True, tools=TOOLS,
                                         messages=[{"role": "user", "content": "weather in Oslo"}])
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(args) == {"query": "weather in Oslo", "limit": 3}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_bedrock_from_anthropic_plain_streamed_and_tools(claude: anthropic.Anthropic, native_mock: Proc) -> None:
    msg = claude.messages.create(model="claude-bedrock", max_tokens=200,
                                 messages=[{"role": "user", "content": "claude to bedrock"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "This is a mock answer to: claude to bedrock"
    assert msg.usage.input_tokens == _last(native_mock, "/converse")["usage"]["inputTokens"]
    with claude.messages.stream(model="claude-bedrock", max_tokens=200,
                                messages=[{"role": "user", "content": "claude streams bedrock"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "This is a mock answer to: claude streams bedrock"
    assert final.usage.output_tokens == _last(native_mock, "/converse-stream")["usage"]["outputTokens"]
    first = claude.messages.create(model="claude-bedrock", max_tokens=200, tools=ANTHROPIC_TOOLS,
                                   messages=[{"role": "user", "content": "weather in Bern"}])
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    second = claude.messages.create(model="claude-bedrock", max_tokens=200, tools=ANTHROPIC_TOOLS, messages=[
        {"role": "user", "content": "weather in Bern"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12C"}]}])
    assert second.stop_reason == "end_turn"
    result = _last(native_mock, "/converse")["body"]["messages"][-1]["content"][0]["toolResult"]
    assert result == {"toolUseId": use.id, "content": [{"text": "12C"}], "status": "success"}


def test_a_wrong_signature_is_the_providers_403_in_each_callers_shape(oai: openai.OpenAI,
                                                                      claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.PermissionDeniedError) as exc:
        oai.chat.completions.create(model="nova-wrong-key", messages=[{"role": "user", "content": "hi"}])
    assert "signature we calculated does not match" in str(exc.value)
    with pytest.raises(anthropic.PermissionDeniedError) as aexc:
        claude.messages.create(model="nova-wrong-key", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert aexc.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_a_gemini_error_comes_back_in_each_callers_shape(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.PermissionDeniedError) as exc:
        oai.chat.completions.create(model="flash-nokey", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["message"].startswith("Method doesn't allow unregistered callers")  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as aexc:
        claude.messages.create(model="flash-nokey", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert aexc.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_gemini_and_bedrock_answers_are_cached_and_replayed(oai: openai.OpenAI, native_mock: Proc,
                                                            tmp_path: Path) -> None:
    for model in ("flash", "nova"):
        before = len(mock_requests(native_mock))
        ask = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": f"cache me {model}"}]}
        first = oai.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
        again = oai.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
        assert again.headers.get("x-cache-hit") == "true"
        assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
        assert len(mock_requests(native_mock)) == before + 1


@pytest.mark.parametrize("model", ["flash-out", "nova-out"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_output_policies_apply_to_translated_answers(oai: openai.OpenAI, claude: anthropic.Anthropic,
                                                    model: str, stream: bool) -> None:
    email = "jane.doe@example.com"
    ask: Any = [{"role": "user", "content": f"write to {email} please"}]
    if stream:
        chunks = list(oai.chat.completions.create(model=model, messages=ask, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        with claude.messages.stream(model=model, max_tokens=100, messages=ask) as s:
            claude_text = "".join(s.text_stream)
    else:
        text = oai.chat.completions.create(model=model, messages=ask).choices[0].message.content or ""
        block: Any = claude.messages.create(model=model, max_tokens=100, messages=ask).content[0]
        claude_text = block.text
    for got in (text, claude_text):
        assert email not in got and "[REDACTED_EMAIL]" in got
    with pytest.raises(openai.BadRequestError if not stream else openai.APIError) as info:
        if stream:
            list(oai.chat.completions.create(model=model, stream=True,
                                             messages=[{"role": "user", "content": "the forbidden topic"}]))
        else:
            oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "the forbidden topic"}])
    assert "out-deny" in str(info.value)


def test_bedrock_prompt_caching_from_both_clients(claude: anthropic.Anthropic, oai: openai.OpenAI,
                                                  native_mock: Proc) -> None:
    # Claude Code's markers (system and tools) become Converse cache points; the mock's Bedrock mode
    # caches at them with Anthropic's rules and bills writes and reads, which reach the client.
    run = time.time_ns()  # a fresh prefix: the mock's caches outlive a test
    system: Any = [{"type": "text", "text": f"Run {run}. " + "You are a careful coding agent. " * 700,
                    "cache_control": {"type": "ephemeral"}}]
    tools: Any = [{**ANTHROPIC_TOOLS[0], "cache_control": {"type": "ephemeral"}}]
    raw = claude.messages.with_raw_response.create(model="claude-bedrock", max_tokens=100, system=system,
                                                   tools=tools, messages=[{"role": "user", "content": "first"}])
    first = raw.parse()
    sent = _last(native_mock, "/converse")
    assert sent["body"]["system"][-1] == {"cachePoint": {"type": "default"}}
    assert sent["body"]["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}
    written = sent["usage"]["cacheWriteInputTokens"]
    assert written > 1000 and sent["usage"]["cacheReadInputTokens"] == 0
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (written, 0)
    assert first.usage.input_tokens == sent["usage"]["inputTokens"]
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(_cost(CLAUDE_ON_BEDROCK, sent["usage"]),
                                                                     abs=1e-8)
    with claude.messages.stream(model="claude-bedrock", max_tokens=100, system=system, tools=tools,
                                messages=[{"role": "user", "content": "second"}]) as stream:
        final = stream.get_final_message()
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (written, 0)

    # An OpenAI client marking a content part (LiteLLM's spelling) reads the same kind of cache.
    long = f"Run {run} (openai). " + "Answer in one line. " * 1000
    ask: Any = [{"role": "system", "content": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}]}]
    oai.chat.completions.create(model="claude-bedrock", messages=[*ask, {"role": "user", "content": "one"}])
    again = oai.chat.completions.create(model="claude-bedrock", messages=[*ask, {"role": "user", "content": "two"}])
    sent = _last(native_mock, "/converse")
    assert sent["body"]["system"] == [{"text": long}, {"cachePoint": {"type": "default"}}]
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == sent["usage"]["cacheReadInputTokens"] > 1000


def test_the_gateway_marks_long_anthropic_conversations_for_claude_on_bedrock(
        claude: anthropic.Anthropic, native_mock: Proc) -> None:
    # No client markers: the gateway's own breakpoints (docs/cost.md, layer 3) become cache points.
    system = f"Run {time.time_ns()}. " + "Follow the house style. " * 400
    turns: Any = [{"role": "user", "content": "first question"}]
    first = claude.messages.create(model="claude-bedrock", max_tokens=50, system=system, messages=turns)
    sent = _last(native_mock, "/converse")["body"]
    assert {"cachePoint": {"type": "default"}} in sent["system"]
    assert first.usage.cache_creation_input_tokens and first.usage.cache_creation_input_tokens > 1000
    turns += [{"role": "assistant", "content": first.content[0].text}, {"role": "user", "content": "and then?"}]  # type: ignore[union-attr]
    second = claude.messages.create(model="claude-bedrock", max_tokens=50, system=system, messages=turns)
    assert second.usage.cache_read_input_tokens and second.usage.cache_read_input_tokens > 1000
