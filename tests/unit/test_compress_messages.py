"""Whole request bodies: what is compressed, what is skipped, and that the input is never mutated."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import numpy as np
import pytest

from gateway.transform.compress import (
    CompressionResult,
    compress_anthropic_messages,
    compress_openai_chat,
    compress_openai_completion,
    compress_openai_responses,
    compress_text,
    resolve_level,
)
from gateway.transform.compress.settings import DEFAULT_LEVELS, default_level, spec_for
from gateway.transform.compress.tokens import count_tokens, tokenizer_name

DOC = " ".join(f"Clause {i}: the supplier shall deliver goods within ten days of an order." for i in range(8))


def openai_body() -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [
            {"role": "system",
             "content": "In order to help, answer prior to asking. Use `in order to` as is."},
            {"role": "user", "content": [
                {"type": "text", "text": f"Due to the fact that I am new:\n\n{DOC}"},
                {"type": "image_url", "image_url": {"url": "https://x.io/in order to.png"}},
            ]},
            {"role": "assistant", "content": "Calling a tool in order to check.",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "f", "arguments": '{"q": "in order to"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Result: in order to win, prior to noon."},
            {"role": "user", "content": f"Again:\n\n{DOC}\n\nIn the event that it fails?"},
        ],
        "unknown_field": {"kept": True},
    }


def anthropic_body() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "It is important to note that you answer briefly.",
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": "In order to plan, what is due prior to Friday?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "in order to think", "signature": "sig"},
                {"type": "text", "text": "Let me check in order to answer."},
                {"type": "tool_use", "id": "t1", "name": "cal", "input": {"q": "in order to"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "in order to: nothing"},
                {"type": "text", "text": "As a matter of fact, thanks."},
            ]},
        ],
    }


def test_openai_compresses_prose_and_skips_tools() -> None:
    body = openai_body()
    snapshot = copy.deepcopy(body)
    result = compress_openai_chat(body, "light")
    assert body == snapshot  # input untouched
    out = result.body
    assert result.changed and result.phrases_replaced == 4 and result.blocks_deduped == 1
    assert out["messages"][0]["content"] == "To help, answer before asking. Use `in order to` as is."
    assert out["messages"][1]["content"][0]["text"].startswith("Because I am new:")
    assert out["messages"][1]["content"][1] is body["messages"][1]["content"][1]  # untouched part shared
    # An assistant turn with tool calls gets no rewriting, only its arguments compacted losslessly.
    assert out["messages"][2]["content"] == body["messages"][2]["content"]
    assert out["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"q":"in order to"}'
    assert result.json_compacted == 1
    assert out["messages"][3] is body["messages"][3]  # tool result: skipped
    assert out["messages"][4]["content"] == (
        "Again:\n\n[same as the document in message 2, paragraph 2]\n\nIf it fails?"
    )
    assert out["unknown_field"] is body["unknown_field"]
    assert result.tokens_after < result.tokens_before


def test_responses_instructions_and_message_items_only() -> None:
    body = {
        "model": "gpt-4o-mini",
        "instructions": "In order to help, answer prior to asking.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "Due to the fact that I am new, explain."},
                {"type": "input_image", "image_url": "https://x.io/in order to.png"},
            ]},
            {"type": "message", "role": "assistant", "content": "In the event that you ask, yes."},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"q": "in order to"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "in order to win"},
            {"type": "reasoning", "id": "r1", "summary": [{"type": "summary_text", "text": "in order to"}]},
        ],
        "tools": [{"type": "function", "name": "f", "description": "in order to look up"}],
    }
    snapshot = copy.deepcopy(body)
    result = compress_openai_responses(body, "light")
    assert body == snapshot and result.changed and result.phrases_replaced == 4
    out = result.body
    assert out["instructions"] == "To help, answer before asking."
    assert out["input"][0]["content"][0]["text"] == "Because I am new, explain."
    assert out["input"][0]["content"][1] is body["input"][0]["content"][1]
    assert out["input"][1]["content"] == "If you ask, yes."
    assert out["input"][2] == {**body["input"][2], "arguments": '{"q":"in order to"}'}  # compacted only
    assert out["input"][3:] == body["input"][3:] and out["input"][3] is body["input"][3]
    assert out["tools"] is body["tools"]
    string_input = compress_openai_responses({"model": "m", "input": "In order to start, say hi."}, "light")
    assert string_input.body["input"] == "To start, say hi."


def test_completions_prompt_string_or_list() -> None:
    one = compress_openai_completion({"model": "m", "prompt": "In order to finish, write prior to noon:"}, "light")
    assert one.body["prompt"] == "To finish, write before noon:"
    body = {"model": "m", "prompt": ["In order to a", "plain", "Due to the fact that b"]}
    many = compress_openai_completion(body, "light")
    assert many.body["prompt"] == ["To a", "plain", "Because b"] and body["prompt"][0] == "In order to a"
    tokens = {"model": "m", "prompt": [1212, 318, 257]}
    assert compress_openai_completion(tokens, "light").body is tokens  # token ids: left alone


def test_anthropic_text_blocks_only_and_cache_control_kept() -> None:
    body = anthropic_body()
    snapshot = copy.deepcopy(body)
    result = compress_anthropic_messages(body, "standard")
    assert body == snapshot
    out = result.body
    assert out["system"] == [{"type": "text", "text": "Note that you answer briefly.",
                              "cache_control": {"type": "ephemeral"}}]
    assert out["messages"][0]["content"] == "To plan, what is due before Friday?"
    blocks = out["messages"][1]["content"]
    assert blocks[0] is body["messages"][1]["content"][0]  # thinking block and its signature
    assert blocks[1]["text"] == "Let me check to answer."
    assert blocks[2] is body["messages"][1]["content"][2]
    assert out["messages"][2]["content"][0] is body["messages"][2]["content"][0]
    assert out["messages"][2]["content"][1]["text"] == "In fact, thanks."
    assert result.phrases_replaced == 5


def test_anthropic_string_system() -> None:
    result = compress_anthropic_messages({"system": "Prior to answering, think.", "messages": []}, "light")
    assert result.body["system"] == "Before answering, think."


@pytest.mark.parametrize("compress", [compress_openai_chat, compress_anthropic_messages])
def test_off_returns_same_body(compress: Any) -> None:
    body = anthropic_body()
    result = compress(body, "off")
    assert result == CompressionResult(body, False, 0, 0, 0, 0) and result.body is body


def test_nothing_to_do_is_unchanged_same_object() -> None:
    body = {"messages": [{"role": "user", "content": "Hello there."}]}
    result = compress_openai_chat(body, "standard")
    assert not result.changed and result.body is body
    assert result.tokens_before == result.tokens_after == count_tokens("Hello there.")


def test_malformed_bodies_pass_through() -> None:
    for body in ({}, {"messages": "x"}, {"messages": [None, {"role": "user"}, {"content": 3}]}):
        assert compress_openai_chat(body, "standard").body is body
        assert compress_anthropic_messages(body, "standard").body is body


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown compression level 'max'"):
        compress_openai_chat(openai_body(), "max")


def test_result_encodes() -> None:
    result = compress_openai_chat(openai_body(), "light")
    decoded = msgspec.json.decode(msgspec.json.encode(result))
    assert decoded["phrases_replaced"] == 4


def test_compress_text() -> None:
    assert compress_text('In order to say "in order to"', "light") == ('To say "in order to"', 1)


def test_levels_and_defaults() -> None:
    assert DEFAULT_LEVELS == {"anthropic": "standard", "openai": "light"}
    assert default_level("mistral") == "light"
    assert resolve_level("anthropic", None, False) == "standard"
    assert resolve_level("openai", None, False) == "light"
    assert resolve_level("openai", "standard", False) == "standard"
    assert resolve_level("anthropic", "standard", True) == "off"
    with pytest.raises(ValueError, match="expected one of off, light, standard"):
        resolve_level("openai", "aggressive", False)
    assert spec_for("light").dedup_near is False and spec_for("standard").dedup_near is True


def test_tokens_are_real_bpe() -> None:
    assert tokenizer_name() == "cl100k_base"
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("<|endoftext|>") > 1  # special-token text is counted as text


def test_near_dedup_only_at_standard() -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> Any:
        calls.append(len(texts))
        return np.ones((len(texts), 2)) / np.sqrt(2)

    near = DOC.replace("Clause 7", "Clause 8")
    body = {"messages": [{"role": "user", "content": DOC}, {"role": "user", "content": near}]}
    assert compress_openai_chat(body, "light", embed=embed).blocks_deduped == 0 and calls == []
    result = compress_anthropic_messages(body, "standard", embed=embed)
    assert calls == [2] and result.blocks_deduped == 1
    reference = "[nearly the same as the document in message 1, paragraph 1]"
    assert result.body["messages"][1]["content"] == reference
