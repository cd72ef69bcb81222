"""Prompt-cache markers to Bedrock cache points, the mock's Bedrock caching, and the markers never
leaking to OpenAI-compatible servers (translations' bytes: golden/bedrock/*cache_markers*)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.mock import bedrock as mock_bedrock
from gateway.mock.caching import PromptCaches, bedrock_as_anthropic, has_cache_points
from gateway.protocol.usage import parse_usage
from gateway.providers.bedrock import CACHE_POINT, caches_prompts, chat_to_converse
from gateway.providers.messages_to_chat import MESSAGES_TO_CHAT
from gateway.providers.routing import NATIVE
from tests.unit.golden.native import MESSAGES_REQUESTS

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
LONG = "You are a careful coding agent. " * 700  # ~5,600 tokens: above every model's cache minimum


def test_markers_never_reach_an_openai_server() -> None:
    # Anthropic client -> OpenAI-compatible deployment: the markers are dropped, as before.
    for case in MESSAGES_REQUESTS.values():
        out = MESSAGES_TO_CHAT.request(msgspec.json.encode(case), None, "gpt-4o", "m", changed=False,
                                       mark_cache=False)
        assert b"cache_control" not in out


def test_a_cache_point_follows_a_block_never_opens_a_list() -> None:
    chat = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}},
                                       {"type": "text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
         "cache_control": {"type": "ephemeral"}}]}
    out = chat_to_converse(chat, MODEL)
    assert out["system"] == [{"text": "Rules."}]
    assert out["messages"] == [{"role": "user", "content": [{"text": "Hi"}, CACHE_POINT]}]  # one point, not two


def test_without_markers_nothing_changes() -> None:
    case = {k: v for k, v in MESSAGES_REQUESTS["claude_code_tools"].items() if k not in ("system", "tools")}
    out = msgspec.json.decode(NATIVE["bedrock"][1].request(msgspec.json.encode(case), None, MODEL, "m",
                                                           changed=False, mark_cache=False))
    assert "cachePoint" not in msgspec.json.encode(out).decode()


def _converse(question: str) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 50,
            "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": question}]}
    return msgspec.json.decode(NATIVE["bedrock"][1].request(msgspec.json.encode(body), None, MODEL, "m",
                                                            changed=False, mark_cache=False))


def test_the_mock_caches_at_cache_points_and_the_client_reads_it_back() -> None:
    caches = PromptCaches()
    messages_via = NATIVE["bedrock"][1]
    seen = []
    for question in ("first", "second"):
        body = _converse(question)
        assert has_cache_points(body)
        cache = caches.anthropic(bedrock_as_anthropic(body, MODEL))
        answer = mock_bedrock.converse(body, 1, 0, cache)
        out, usage = messages_via.response(msgspec.json.encode(answer), "m")
        assert usage == parse_usage(answer["usage"])
        seen.append((msgspec.json.decode(out)["usage"], answer["usage"]))
    (first, wire1), (second, wire2) = seen
    assert wire1["cacheWriteInputTokens"] > 1000 and wire1["cacheReadInputTokens"] == 0
    assert first["cache_creation_input_tokens"] == wire1["cacheWriteInputTokens"]
    assert second["cache_read_input_tokens"] == wire1["cacheWriteInputTokens"]
    assert second["cache_creation_input_tokens"] == 0 and second["input_tokens"] == wire2["inputTokens"]


def test_the_mock_ignores_a_body_without_cache_points() -> None:
    body = _converse("x")
    body["system"] = [b for b in body["system"] if "cachePoint" not in b]
    assert not has_cache_points(body)
    assert PromptCaches().anthropic(bedrock_as_anthropic(body, MODEL))[:2] == (0, 0)


@pytest.mark.parametrize(("model", "expected"), [
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", (True, True)),
    ("global.anthropic.claude-opus-4-5-20251101-v1:0", (True, True)),
    ("us-gov.anthropic.claude-3-7-sonnet-20250219-v1:0", (True, True)),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", (True, True)),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", (True, True)),
    ("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0", (True, True)),
    ("apac.amazon.nova-pro-v1:0", (True, False)),  # Nova: no cache point after the tools
    ("amazon.nova-2-lite-v1:0", (True, False)),
    # Bedrock refuses a cache point for these: the markers must go.
    ("anthropic.claude-3-haiku-20240307-v1:0", (False, False)),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", (False, False)),
    ("anthropic.claude-instant-v1", (False, False)),
    ("meta.llama3-70b-instruct-v1:0", (False, False)),
    ("us.deepseek.r1-v1:0", (False, False)),
    ("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc123", (False, False)),
])
def test_which_models_take_cache_points(model: str, expected: tuple[bool, bool]) -> None:
    assert caches_prompts(model) == expected
    body = MESSAGES_REQUESTS["cache_markers"]
    out = NATIVE["bedrock"][1].request(msgspec.json.encode(body), None, model, "m", changed=False, mark_cache=False)
    sent = msgspec.json.decode(out)
    points_in_tools = sum("cachePoint" in t for t in sent["toolConfig"]["tools"])
    points = out.count(b'"cachePoint"')
    assert (points > 0, points_in_tools > 0) == expected
    if expected[0]:
        assert points - points_in_tools == 6  # system, image, text, tool_use, tool_result, text
