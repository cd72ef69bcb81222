"""OpenAI chat <-> Anthropic messages translation: pure functions, table-driven."""

from __future__ import annotations

import json

from gateway.providers.translate import AnthropicToChatStream, anthropic_to_chat, chat_to_anthropic

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]


def test_system_messages_tools_and_results() -> None:
    body = {
        "model": "x", "temperature": 0, "stop": "END", "max_tokens": 99, "tools": TOOLS, "tool_choice": "required",
        "messages": [
            {"role": "system", "content": "sys one"},
            {"role": "developer", "content": [{"type": "text", "text": "sys two"}]},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
            {"role": "assistant", "content": "ok", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "user", "content": "and?"},
        ],
    }
    out = chat_to_anthropic(body, "claude-x")
    assert out["system"] == "sys one\n\nsys two"
    assert out["max_tokens"] == 99 and out["stop_sequences"] == ["END"] and out["temperature"] == 0
    schema = {"type": "object", "properties": {}}
    assert out["tools"] == [{"name": "lookup", "description": "d", "input_schema": schema}]
    assert out["tool_choice"] == {"type": "any"}
    msgs = out["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                 "data": "AAA"}}
    assert msgs[1]["content"] == [{"type": "text", "text": "ok"},
                                  {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": 1}}]
    # The tool result and the next user turn merge into one user message (turns must alternate).
    assert msgs[2]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                                  {"type": "text", "text": "and?"}]


def test_default_max_tokens_and_parallel_flag() -> None:
    out = chat_to_anthropic({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS,
                             "parallel_tool_calls": False}, "m")
    assert out["max_tokens"] == 4096
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_response_with_tool_use_and_cache_usage() -> None:
    msg = {"id": "msg_1", "content": [{"type": "text", "text": "Let me check."},
                                      {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"a": [1]}}],
           "stop_reason": "tool_use",
           "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 20}}
    out = anthropic_to_chat(msg, "client-model")
    choice = out["choices"][0]
    assert out["model"] == "client-model" and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"a": [1]}
    assert out["usage"] == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                            "prompt_tokens_details": {"cached_tokens": 100}}


def test_stop_reasons() -> None:
    for anth, oai in [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"),
                      ("tool_use", "tool_calls")]:
        assert anthropic_to_chat({"content": [], "stop_reason": anth}, "m")["choices"][0]["finish_reason"] == oai


def test_stream_events_to_chunks() -> None:
    tr = AnthropicToChatStream("m", include_usage=True)
    events = [
        {"type": "message_start", "message": {"id": "msg_9", "usage": {"input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "t", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in tr.feed(None, e)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "chatcmpl-9"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hi"
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] == "t" and calls[0]["index"] == 0
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"a": 1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 10
