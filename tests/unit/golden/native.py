"""Golden cases for the providers with their own wire (Gemini, Bedrock Converse), from both kinds
of client: inputs here, expected outputs in golden/gemini/ and golden/bedrock/.

Regenerate (after a deliberate change, then review the diff):  python -m tests.unit.golden.native
"""

from __future__ import annotations

import sys
from typing import Any
from unittest import mock

import msgspec

from gateway.protocol import eventstream
from gateway.providers.routing import NATIVE
from tests.unit.golden import write

FROZEN_TIME = 1_767_225_600.0

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}, "required": ["city"],
                                               "additionalProperties": False}}}]
PNG = "iVBORw0KGgo="

CHAT_REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"model": "m", "messages": [{"role": "user", "content": "Hello"}]},
    "system_and_params": {
        "model": "m", "temperature": 0.2, "top_p": 0.9, "max_tokens": 256, "stop": ["END"], "seed": 7,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "developer", "content": "Be kind."},
                     {"role": "user", "content": "Hi"}]},
    "tools_round_trip": {
        "model": "m", "tools": TOOLS, "tool_choice": "auto",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18, \"sky\": \"clear\"}"},
            {"role": "user", "content": "And tomorrow?"}]},
    "forced_tool": {"model": "m", "tools": TOOLS,
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                    "messages": [{"role": "user", "content": "Paris"}]},
    "image": {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}]},
    "signed_tool_call": {"model": "m", "tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_r2_0_ts_c2lnLzErPQ", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_r2_0_ts_c2lnLzErPQ", "content": "18C"}]},
    "json_schema": {"model": "m", "response_format": {"type": "json_schema", "json_schema": {
        "name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}},
        "max_completion_tokens": 64, "messages": [{"role": "user", "content": "A city"}]},
    # Prompt-cache markers as LiteLLM takes them from OpenAI clients: on a content part, a whole
    # message, a tool. Bedrock places cache points after them; Gemini (implicit caching) drops them.
    "cache_markers": {
        "model": "m", "tools": [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}},
                                           {"type": "text", "text": "Today is Monday."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?",
                                          "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}",
             "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": "And tomorrow?", "cache_control": {"type": "ephemeral"}}]},
}

# The shapes Claude Code sends: system blocks, tools with cache_control, tool_use / tool_result turns.
MESSAGES_REQUESTS: dict[str, dict[str, Any]] = {
    "claude_code_tools": {
        "model": "m", "max_tokens": 1024, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": "Run a shell command", "cache_control": {"type": "ephemeral"},
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                    "required": ["command"]}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "List the files"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Running ls."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                               "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py\nb.py"},
                                         {"type": "text", "text": "Which is bigger?"}]}]},
    "tool_error": {
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Run it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Bash",
                                               "input": {"command": "false"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                                          "content": "exit 1"}]}],
        "tools": [{"name": "Bash", "description": "Run", "input_schema": {"type": "object", "properties": {}}}]},
    # A marker on each kind of block Anthropic lets carry one (4 is its limit per request; the
    # translation does not count them): system, text, image, tool_use, tool_result, tool.
    "cache_markers": {
        "model": "m", "max_tokens": 64,
        "system": [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Session notes."}],
        "tools": [{"name": "Bash", "description": "Run", "cache_control": {"type": "ephemeral"},
                   "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look.", "cache_control": {"type": "ephemeral"}},
                {"type": "tool_use", "id": "toolu_3", "name": "Bash", "input": {"command": "file x.png"},
                 "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_3",
                 "content": [{"type": "text", "text": "PNG image", "cache_control": {"type": "ephemeral"}}]},
                {"type": "text", "text": "So?", "cache_control": {"type": "ephemeral"}}]}]},
}

GEMINI_RESPONSES: dict[str, dict[str, Any]] = {
    "text": {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think.", "thought": True}, {"text": "Hello "}, {"text": "there."}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "cachedContentTokenCount": 100, "candidatesTokenCount": 4,
                          "thoughtsTokenCount": 9, "totalTokenCount": 133},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"},
    "function_call": {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLzErPQ=="},
        {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 20, "totalTokenCount": 50},
        "responseId": "r2"},
    "max_tokens": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Cut"}]},
                                   "finishReason": "MAX_TOKENS", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}, "responseId": "r3"},
    "blocked_prompt": {"promptFeedback": {"blockReason": "SAFETY"},
                       "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}, "responseId": "r4"},
}

BEDROCK_RESPONSES: dict[str, dict[str, Any]] = {
    "text": {"output": {"message": {"role": "assistant", "content": [{"text": "Hello there."}]}},
             "stopReason": "end_turn",
             "usage": {"inputTokens": 12, "outputTokens": 4, "totalTokens": 216, "cacheReadInputTokens": 100,
                       "cacheWriteInputTokens": 100},
             "metrics": {"latencyMs": 300}},
    "tool_use": {"output": {"message": {"role": "assistant", "content": [
        {"text": "Checking."}, {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather",
                                            "input": {"city": "Paris"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 30, "outputTokens": 20, "totalTokens": 50}},
    "max_tokens": {"output": {"message": {"role": "assistant", "content": [{"text": "Cut"}]}},
                   "stopReason": "max_tokens", "usage": {"inputTokens": 5, "outputTokens": 1, "totalTokens": 6}},
    "guardrail": {"output": {"message": {"role": "assistant", "content": [{"text": "Sorry."}]}},
                  "stopReason": "guardrail_intervened", "usage": {"inputTokens": 5, "outputTokens": 2}},
}


def _gemini_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + msgspec.json.encode(e) + b"\r\n\r\n" for e in events)


GEMINI_STREAMS: dict[str, bytes] = {
    "text": _gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 10}, "responseId": "s1"},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP",
                         "index": 0}],
         "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 3},
         "responseId": "s1"}]),
    "function_call": _gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP",
            "index": 0}],
         "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 9}, "responseId": "s2"}]),
    "error_mid_stream": _gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Par"}]}, "index": 0}], "responseId": "s3"},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]),
    "cut_before_finish": _gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Half"}]}, "index": 0}],
         "responseId": "s4"}]),
}


def _ev(kind: str, data: dict[str, Any]) -> bytes:
    return eventstream.event(kind, msgspec.json.encode({**data, "p": "abcd"}))


BEDROCK_STREAMS: dict[str, bytes] = {
    "text": b"".join([
        _ev("messageStart", {"role": "assistant"}),
        _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        _ev("contentBlockStop", {"contentBlockIndex": 0}),
        _ev("messageStop", {"stopReason": "end_turn"}),
        _ev("metadata", {"usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 62,
                                   "cacheReadInputTokens": 50}, "metrics": {"latencyMs": 80}})]),
    "tool_use": b"".join([
        _ev("messageStart", {"role": "assistant"}),
        _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
        _ev("contentBlockStop", {"contentBlockIndex": 0}),
        _ev("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_2",
                                                                                "name": "get_weather"}}}),
        _ev("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\": "}}}),
        _ev("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
        _ev("contentBlockStop", {"contentBlockIndex": 1}),
        _ev("messageStop", {"stopReason": "tool_use"}),
        _ev("metadata", {"usage": {"inputTokens": 40, "outputTokens": 9, "totalTokens": 49}})]),
    "cache_write": b"".join([
        _ev("messageStart", {"role": "assistant"}),
        _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Cached."}}),
        _ev("contentBlockStop", {"contentBlockIndex": 0}),
        _ev("messageStop", {"stopReason": "end_turn"}),
        _ev("metadata", {"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 2060,
                                   "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 1050}})]),
    "throttled_mid_stream": b"".join([
        _ev("messageStart", {"role": "assistant"}),
        _ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Par"}}),
        eventstream.exception("throttlingException", b'{"message":"Too many tokens, please wait."}')]),
}
_corrupt = bytearray(BEDROCK_STREAMS["text"])
_corrupt[len(_ev("messageStart", {"role": "assistant"})) + 40] ^= 0xFF  # inside the second message: its CRC fails
BEDROCK_STREAMS["corrupt_frame"] = bytes(_corrupt)

PROVIDERS = {"gemini": ("gemini-2.5-flash", GEMINI_RESPONSES, GEMINI_STREAMS),
             "bedrock": ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", BEDROCK_RESPONSES, BEDROCK_STREAMS)}


def _pieces(raw: bytes, size: int = 37) -> list[bytes]:
    # Chunk boundaries that split events and frames: the translators must not care.
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def render_all() -> dict[str, bytes]:
    """Every golden file's expected bytes, computed by the translators as they are now."""
    out: dict[str, bytes] = {}
    with mock.patch("gateway.providers.gemini.time.time", return_value=FROZEN_TIME), \
            mock.patch("gateway.providers.bedrock.time.time", return_value=FROZEN_TIME):
        for kind, (model, responses, streams) in PROVIDERS.items():
            chat, messages = NATIVE[kind]
            for name, req in CHAT_REQUESTS.items():
                out[f"{kind}/chat_request_{name}.json"] = chat.request(
                    msgspec.json.encode(req), None, model, "m", changed=False, mark_cache=False)
            for name, req in MESSAGES_REQUESTS.items():
                out[f"{kind}/messages_request_{name}.json"] = messages.request(
                    msgspec.json.encode(req), None, model, "m", changed=False, mark_cache=False)
            for name, resp in responses.items():
                for client, translator in (("chat", chat), ("messages", messages)):
                    body, usage = translator.response(msgspec.json.encode(resp), "m")
                    out[f"{kind}/{client}_response_{name}.json"] = body
                out[f"{kind}/response_{name}.usage.json"] = msgspec.json.encode(usage)
            for name, raw in streams.items():
                for include_usage in (False, True):
                    st = chat.stream("m", include_usage, [])
                    sent = b"".join(st.feed(p) for p in _pieces(raw)) + st.finish()
                    out[f"{kind}/chat_stream_{name}{'_usage' if include_usage else ''}.sse"] = sent
                ms = messages.stream("m", True, [])
                out[f"{kind}/messages_stream_{name}.sse"] = b"".join(ms.feed(p) for p in _pieces(raw)) + ms.finish()
                out[f"{kind}/stream_{name}.usage.json"] = msgspec.json.encode(st.usage)
    return out


if __name__ == "__main__":
    sys.exit(write(render_all()))
