"""Replay a stored answer as SSE, assemble SSE back: the round trip must give the original back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.cache.replay import (
    assemble_anthropic_stream,
    assemble_openai_stream,
    replay_anthropic,
    replay_openai,
)

LONG = "The quick brown fox jumps over the lazy dog. " * 4


def parse(stream: Iterable[bytes]) -> list[tuple[str | None, bytes]]:
    """A minimal SSE parser: what the lead's parser yields, (event, data) per event."""
    events = []
    for chunk in stream:
        assert chunk.endswith(b"\n\n")
        event, data = None, b""
        for line in chunk.decode().strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "data":
                data = value.encode()
        events.append((event, data))
    return events


def openai_body(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 40, "total_tokens": 51},
    }


def test_openai_text_round_trip_with_usage() -> None:
    original = openai_body(content=LONG)
    events = parse(replay_openai(msgspec.json.encode(original), include_usage=True))
    assert events[-1] == (None, b"[DONE]")
    chunks = [msgspec.json.decode(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 3
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == original["usage"]
    assert assemble_openai_stream(events) == original


def test_openai_tool_calls_round_trip_without_usage() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    original = openai_body(content=None, tool_calls=calls)
    events = parse(replay_openai(original))
    assert all(b'"usage"' not in d for _, d in events)
    rebuilt = assemble_openai_stream(events)
    assert rebuilt["choices"] == original["choices"]
    assert "usage" not in rebuilt


def test_text_completion_round_trip() -> None:
    original = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"index": 0, "text": LONG, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 40, "total_tokens": 42},
    }
    assert assemble_openai_stream(parse(replay_openai(original, include_usage=True))) == original


def test_anthropic_round_trip() -> None:
    original = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": [
            {"type": "thinking", "thinking": "Let me think. " * 5, "signature": "sig"},
            {"type": "text", "text": LONG},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "weather",
                "input": {"city": "Paris", "days": [1, 2, 3], "detail": {"hourly": True}},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 70, "cache_read_input_tokens": 0},
    }
    events = parse(replay_anthropic(msgspec.json.encode(original)))
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    assert all(msgspec.json.decode(d)["type"] == e for e, d in events)
    assert assemble_anthropic_stream(events) == original


def test_embeddings_answers_are_reusable_unless_empty_or_an_error() -> None:
    from gateway.cache.replay import reusable_answer

    ok = {"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
          "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    assert reusable_answer(msgspec.json.encode(ok)) == 7
    assert reusable_answer(msgspec.json.encode({**ok, "data": []})) is None
    assert reusable_answer(msgspec.json.encode({**ok, "data": [{"index": 0}]})) is None
    assert reusable_answer(b'{"error": {"message": "no"}}') is None
