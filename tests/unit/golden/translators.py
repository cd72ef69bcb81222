"""Golden cases for the translators: inputs here, expected outputs in golden/<translator>/*.json.

Regenerate (after a deliberate change, then review the diff):  python -m tests.unit.golden.translators
"""

from __future__ import annotations

import sys
from typing import Any
from unittest import mock

import msgspec

from gateway.providers.translate import CHAT_TO_ANTHROPIC, PASSTHROUGH
from tests.unit.golden import write

FROZEN_TIME = 1_767_225_600.0  # the translators stamp `created`: frozen so outputs are byte-stable

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}, "required": ["city"]}}}]

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"model": "claude", "messages": [{"role": "user", "content": "Hello"}]},
    "system_and_params": {
        "model": "claude", "temperature": 0.2, "top_p": 0.9, "max_tokens": 256, "stop": ["END"],
        "user": "u-42",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]},
    "tools_round_trip": {
        "model": "claude", "tools": TOOLS, "tool_choice": "auto",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, clear"}]},
    "forced_tool": {"model": "claude", "tools": TOOLS,
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                    "messages": [{"role": "user", "content": "Paris"}]},
    "image": {"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
}

RESPONSES: dict[str, dict[str, Any]] = {
    "text": {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
             "content": [{"type": "text", "text": "Hello there."}], "stop_reason": "end_turn",
             "usage": {"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 100,
                       "cache_creation_input_tokens": 0}},
    "tool_use": {"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                 "content": [{"type": "text", "text": "Checking."},
                             {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                              "input": {"city": "Paris"}}],
                 "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 20}},
    "max_tokens": {"id": "msg_03", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                   "content": [{"type": "text", "text": "Cut"}], "stop_reason": "max_tokens",
                   "usage": {"input_tokens": 5, "output_tokens": 1}},
}


def _sse(events: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    return [f"event: {name}\ndata: ".encode() + msgspec.json.encode(data) + b"\n\n" for name, data in events]


STREAMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "text": [
        ("message_start", {"type": "message_start", "message": {"id": "msg_04", "usage": {
            "input_tokens": 10, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"})],
    "tool_use": [
        ("message_start", {"type": "message_start", "message": {"id": "msg_05", "usage": {
            "input_tokens": 40, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"})],
    "error_mid_stream": [
        ("message_start", {"type": "message_start", "message": {"id": "msg_06", "usage": {}}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})],
}


def render_all() -> dict[str, bytes]:
    """Every golden file's expected bytes, computed by the translators as they are now."""
    out: dict[str, bytes] = {}
    with mock.patch("gateway.providers.translate.time.time", return_value=FROZEN_TIME):
        for name, req in REQUESTS.items():
            body = msgspec.json.encode(req)
            out[f"chat_to_anthropic/request_{name}.json"] = CHAT_TO_ANTHROPIC.request(
                body, None, "claude-sonnet-4-5", "claude", changed=False, mark_cache=False)
        marked = {**REQUESTS["system_and_params"]}
        marked["messages"] = [{"role": "system", "content": "Long rules. " * 400}, {"role": "user", "content": "Hi"}]
        out["chat_to_anthropic/request_marked_system.json"] = CHAT_TO_ANTHROPIC.request(
            msgspec.json.encode(marked), None, "claude-sonnet-4-5", "claude", changed=False, mark_cache=True)
        for name, resp in RESPONSES.items():
            body, usage = CHAT_TO_ANTHROPIC.response(msgspec.json.encode(resp), "claude")
            out[f"chat_to_anthropic/response_{name}.json"] = body
            out[f"chat_to_anthropic/response_{name}.usage.json"] = msgspec.json.encode(usage)
        for name, events in STREAMS.items():
            for include_usage in (False, True):
                keep: list[tuple[str | None, bytes]] = []
                st = CHAT_TO_ANTHROPIC.stream("claude", include_usage, keep)
                frames = _sse(events)
                # Chunk boundaries that split events: the translator must not care.
                raw = b"".join(frames)
                pieces = [raw[i:i + 37] for i in range(0, len(raw), 37)]
                sent = b"".join(st.feed(p) for p in pieces) + st.finish()
                suffix = "_usage" if include_usage else ""
                out[f"chat_to_anthropic/stream_{name}{suffix}.sse"] = sent
                if include_usage:
                    out[f"chat_to_anthropic/stream_{name}.usage.json"] = msgspec.json.encode(st.usage)
        raw = b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "x": 1}'
        out["passthrough/request_renamed.json"] = PASSTHROUGH.request(
            raw, None, "gpt-4o-2024-08-06", "gpt", changed=False, mark_cache=False)
        out["passthrough/request_untouched.json"] = PASSTHROUGH.request(
            raw, None, "gpt", "gpt", changed=False, mark_cache=False)
    return out


if __name__ == "__main__":
    sys.exit(write(render_all()))

