"""Golden cases for Anthropic messages -> OpenAI chat: inputs here, expected outputs in golden/messages_to_chat/.

The requests are the shapes Claude Code sends (system blocks with cache_control, tools, tool_use and
tool_result turns, images, streaming). Regenerate after a deliberate change, then review the diff:
    python -m tests.unit.golden.messages_to_chat
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from gateway.providers.count_tokens import count_tokens
from gateway.providers.messages_to_chat import MESSAGES_TO_CHAT, ChatToMessagesSSE
from tests.unit.golden import write

DIR = "messages_to_chat"

TOOLS = [
    {"name": "get_weather", "description": "Weather for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "Bash", "description": "Run a shell command",
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
     "cache_control": {"type": "ephemeral"}},
]

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"model": "claude-sonnet-4-5", "max_tokens": 1024,
              "messages": [{"role": "user", "content": "Hello"}]},
    "system_and_params": {
        "model": "claude-sonnet-4-5", "max_tokens": 256, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["END", "STOP"], "metadata": {"user_id": "u-42"},
        "system": [{"type": "text", "text": "You are terse. ", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in English."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                     {"role": "assistant", "content": "Hello."},
                     {"role": "user", "content": [{"type": "text", "text": "Again, "},
                                                  {"type": "text", "text": "hi"}]}]},
    "tools_round_trip": {
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "tools": TOOLS, "tool_choice": {"type": "auto"},
        "system": "You are a coding agent.",
        "messages": [
            {"role": "user", "content": "Weather in Paris, and list the files."},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two tools.", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, clear"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "ls: permission denied"}]},
                {"type": "text", "text": "Summarise."}]}]},
    "forced_tool": {"model": "claude-sonnet-4-5", "max_tokens": 100, "tools": TOOLS[:1],
                    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
                    "messages": [{"role": "user", "content": "Paris"}]},
    "any_tool": {"model": "claude-sonnet-4-5", "max_tokens": 100, "tool_choice": {"type": "any"},
                 "tools": [*TOOLS[:1], {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
                 "messages": [{"role": "user", "content": "Paris"}]},
    "image": {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What are these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]}]},
    "stream": {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
               "messages": [{"role": "user", "content": "Count to three"}]},
}
# The deployment model each request goes to (a reasoning model takes max_completion_tokens).
TARGETS = {"plain": "gpt-4o", "system_and_params": "gpt-4o", "tools_round_trip": "qwen2.5-coder",
           "forced_tool": "gpt-4.1", "any_tool": "o4-mini", "image": "gpt-4o", "stream": "llama3"}

RESPONSES: dict[str, dict[str, Any]] = {
    "text": {"id": "chatcmpl-A1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 112, "completion_tokens": 4, "total_tokens": 116,
                       "prompt_tokens_details": {"cached_tokens": 100}}},
    "tool_calls": {"id": "chatcmpl-A2", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                   "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                       "role": "assistant", "content": "Checking.", "tool_calls": [
                           {"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                           {"id": "call_2", "type": "function",
                            "function": {"name": "Bash", "arguments": "{\"command\":\"ls -la\"}"}}]}}],
                   "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}},
    "length": {"id": "chatcmpl-A3", "object": "chat.completion", "created": 1, "model": "gpt-4o",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Cut"},
                            "finish_reason": "length"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
    "content_filter": {"id": "chatcmpl-A4", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                    "finish_reason": "content_filter"}]},
}


def _chunk(delta: dict[str, Any], finish: str | None = None, cid: str = "chatcmpl-S1") -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "chatcmpl-S1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
                                        "prompt_tokens_details": {"cached_tokens": 8}}}


def _call(index: int, cid: str | None, name: str | None, args: str) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args}
    call: dict[str, Any] = {"index": index, "function": fn}
    if cid:
        call.update(id=cid, type="function")
        fn["name"] = name
    return {"tool_calls": [call]}


STREAMS: dict[str, list[Any]] = {
    "text": [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "One, "}),
             _chunk({"content": "two, three."}), _chunk({}, "stop"), USAGE_CHUNK, "[DONE]"],
    "tool_use": [_chunk({"role": "assistant", "content": None}),
                 _chunk(_call(0, "call_1", "get_weather", "")), _chunk(_call(0, None, None, "{\"city\": ")),
                 _chunk(_call(0, None, None, "\"Paris\"}")),
                 _chunk(_call(1, "call_2", "Bash", "{\"command\"")), _chunk(_call(1, None, None, ": \"ls\"}")),
                 _chunk({}, "tool_calls"), USAGE_CHUNK, "[DONE]"],
    "text_then_tool": [_chunk({"role": "assistant", "content": "Let me check."}),
                       _chunk(_call(0, "call_9", "get_weather", "{\"city\": \"Oslo\"}")),
                       _chunk({}, "tool_calls"), "[DONE]"],
    "length_no_done": [_chunk({"content": "Cut"}), _chunk({}, "length")],
    "error_mid_stream": [_chunk({"content": "Hal"}),
                         {"error": {"message": "upstream overloaded", "type": "server_error"}}],
}


def _sse(items: list[Any]) -> bytes:
    return b"".join(b"data: " + (item.encode() if isinstance(item, str) else msgspec.json.encode(item)) + b"\n\n"
                    for item in items)


def render_all() -> dict[str, bytes]:
    """Every golden file's expected bytes, computed by the translators as they are now."""
    out: dict[str, bytes] = {}
    counts = {}
    for name, req in REQUESTS.items():
        out[f"{DIR}/request_{name}.json"] = MESSAGES_TO_CHAT.request(
            msgspec.json.encode(req), None, TARGETS[name], req["model"], changed=False, mark_cache=False)
        counts[name] = count_tokens(req, TARGETS[name])
    out[f"{DIR}/count_tokens.json"] = msgspec.json.encode(counts)
    for name, resp in RESPONSES.items():
        body, usage = MESSAGES_TO_CHAT.response(msgspec.json.encode(resp), "claude-sonnet-4-5")
        out[f"{DIR}/response_{name}.json"] = body
        out[f"{DIR}/response_{name}.usage.json"] = msgspec.json.encode(usage)
    for name, items in STREAMS.items():
        st = ChatToMessagesSSE("claude-sonnet-4-5", input_tokens=12)
        raw = _sse(items)
        # Chunk boundaries that split events: the translator must not care.
        sent = b"".join(st.feed(raw[i:i + 37]) for i in range(0, len(raw), 37)) + st.finish()
        out[f"{DIR}/stream_{name}.sse"] = sent
        out[f"{DIR}/stream_{name}.usage.json"] = msgspec.json.encode(st.usage)
    return out


if __name__ == "__main__":
    sys.exit(write(render_all()))
