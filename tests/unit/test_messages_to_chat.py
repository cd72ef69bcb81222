"""Anthropic messages <-> OpenAI chat: golden files byte for byte, and the official SDKs reading the output.

The expected bytes live in tests/unit/golden/messages_to_chat/; `python -m tests.unit.golden.messages_to_chat`
rewrites them after a deliberate change (review the diff). The `anthropic` SDK parses the translated
answers and streams through an in-process transport (no network), as a client of the gateway would.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import msgspec
import pytest

from gateway.providers.count_tokens import count_tokens
from gateway.providers.messages_to_chat import (
    MESSAGES_TO_CHAT,
    ChatToMessagesSSE,
    ChatToMessagesStream,
    chat_to_message,
    messages_to_chat,
)
from gateway.providers.translate import STOP_REASONS, chat_to_anthropic
from gateway.transform.compress.tokens import count_tokens as count_text
from tests.unit.golden import HERE
from tests.unit.golden.messages_to_chat import DIR, REQUESTS, RESPONSES, render_all

RENDERED = render_all()


def test_every_golden_file_has_a_case() -> None:
    on_disk = {str(p.relative_to(HERE)) for p in (HERE / DIR).iterdir()}
    assert on_disk == set(RENDERED)


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_translation_matches_its_golden_file(name: str) -> None:
    assert RENDERED[name] == (HERE / name).read_bytes(), f"{name} changed: regenerate and review the diff"


def sdk(answer: bytes, stream: bool = False) -> anthropic.Anthropic:
    """An Anthropic client whose every request is answered with `answer`."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        kind = "text/event-stream" if stream else "application/json"
        return httpx2.Response(200, content=answer, headers={"content-type": kind})

    return anthropic.Anthropic(api_key="test", base_url="http://gateway.test",
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_the_sdk_reads_every_translated_answer(name: str) -> None:
    body, _ = MESSAGES_TO_CHAT.response(msgspec.json.encode(RESPONSES[name]), "claude-sonnet-4-5")
    msg = sdk(body).messages.create(model="claude-sonnet-4-5", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-sonnet-4-5"
    expected = {"text": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"}
    assert msg.stop_reason == expected[name]
    if name == "tool_calls":
        uses = [b for b in msg.content if b.type == "tool_use"]
        assert [(u.id, u.name, u.input) for u in uses] == [
            ("call_1", "get_weather", {"city": "Paris"}), ("call_2", "Bash", {"command": "ls -la"})]
    if name == "text":
        assert msg.usage.input_tokens == 12 and msg.usage.cache_read_input_tokens == 100
        assert msg.usage.output_tokens == 4


@pytest.mark.parametrize("name", ["text", "tool_use", "text_then_tool", "length_no_done"])
def test_the_sdk_accumulates_every_translated_stream(name: str) -> None:
    sent = RENDERED[f"{DIR}/stream_{name}.sse"]
    with sdk(sent, stream=True).messages.stream(model="claude-sonnet-4-5", max_tokens=10,
                                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    blocks = [(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in final.content]
    assert blocks == {
        "text": [("text", "One, two, three.", None)],
        "tool_use": [("tool_use", None, {"city": "Paris"}), ("tool_use", None, {"command": "ls"})],
        "text_then_tool": [("text", "Let me check.", None), ("tool_use", None, {"city": "Oslo"})],
        "length_no_done": [("text", "Cut", None)],
    }[name]
    assert final.stop_reason == {"text": "end_turn", "tool_use": "tool_use", "text_then_tool": "tool_use",
                                 "length_no_done": "max_tokens"}[name]
    if name in ("text", "tool_use"):
        assert final.usage.output_tokens == 9 and final.usage.input_tokens == 32


def test_the_sdk_raises_the_mid_stream_error() -> None:
    sent = RENDERED[f"{DIR}/stream_error_mid_stream.sse"]
    with pytest.raises(anthropic.APIStatusError, match="upstream overloaded"), \
            sdk(sent, stream=True).messages.stream(model="m", max_tokens=10,
                                                   messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()


def test_round_trip_through_the_other_translator_keeps_the_conversation() -> None:
    # Anthropic -> chat (here) -> Anthropic (translate.py) gives back the same turns and tools.
    req = REQUESTS["tools_round_trip"]
    back = chat_to_anthropic(messages_to_chat(req, "gpt-4o"), "claude-sonnet-4-5")
    assert back["system"] == req["system"]
    assert [t["name"] for t in back["tools"]] == ["get_weather", "Bash"]
    assistant = back["messages"][1]["content"]
    assert [b["type"] for b in assistant] == ["text", "tool_use", "tool_use"]  # thinking dropped
    assert assistant[1]["input"] == {"city": "Paris"}
    results = back["messages"][2]["content"]
    assert [b.get("tool_use_id") for b in results if b["type"] == "tool_result"] == ["toolu_1", "toolu_2"]


def test_finish_reasons_invert_the_other_direction() -> None:
    from gateway.providers.messages_to_chat import FINISH_REASONS

    for finish, stop in FINISH_REASONS.items():
        assert finish == "function_call" or STOP_REASONS[stop] == finish


def test_stream_finish_is_idempotent_and_nothing_follows_it() -> None:
    st = ChatToMessagesStream("m")
    st.feed({"id": "chatcmpl-x", "choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]})
    first = st.finish()
    assert [e for e, _ in first] == ["content_block_stop", "message_delta", "message_stop"]
    assert st.finish() == [] and st.feed({"choices": [{"delta": {"content": "late"}}]}) == []


def test_an_empty_upstream_stream_is_still_a_whole_message() -> None:
    st = ChatToMessagesSSE("m")
    out = st.feed(b"data: [DONE]\n\n") + st.finish()
    names = [line.split(b": ", 1)[1] for line in out.splitlines() if line.startswith(b"event:")]
    assert names == [b"message_start", b"message_delta", b"message_stop"]


def test_count_tokens_uses_the_models_tokenizer() -> None:
    body: dict[str, Any] = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hello world, again"}]}
    for model in ("gpt-4o", "gpt-4"):
        expected = count_text("Be brief.", model) + count_text("Hello world, again", model) + 3 + 3 + 3
        assert count_tokens(body, model) == expected
    text = "日本語のテキストを数えます。" * 20
    jp: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    assert count_tokens(jp, "gpt-4o") < count_tokens(jp, "gpt-4")  # o200k vs cl100k
    # Tools and tool results count; an image counts its fixed estimate.
    with_tool = {**body, "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}]}
    assert count_tokens(with_tool, "gpt-4o") > count_tokens(body, "gpt-4o")
    image = {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}]}
    assert count_tokens(image, "gpt-4o") == 1600 + 6


def test_malformed_parts_do_not_raise() -> None:
    out = messages_to_chat({"messages": [{"role": "user", "content": [None, 3, {"type": "text", "text": "x"}]},
                                         "junk"], "max_tokens": 5}, "gpt-4o")
    assert out["messages"] == [{"role": "user", "content": "x"}]
    msg = chat_to_message({"choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}, "finish_reason": "tool_calls"}]}, "m")
    assert msg["content"][0]["type"] == "tool_use" and msg["stop_reason"] == "tool_use"
    assert json.dumps(msg)  # still plain JSON
