"""Lossless compaction: JSON round-trips, prose whitespace outside protected spans, repeated outputs."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transform.compress import compress_anthropic_messages, compress_openai_chat
from gateway.transform.compress.compact import compact_body, compact_json, compact_prose
from gateway.transform.compress.protect import protected_texts

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.sampled_from([None, 1, 2, 4]), st.booleans())
def test_json_compaction_round_trips_to_an_equal_value(value: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    out = compact_json(text)
    if out is None:
        return
    assert json.loads(out) == value
    assert len(out) < len(text)
    out.encode()  # always valid UTF-8


def test_json_compaction_refuses_what_would_not_round_trip() -> None:
    assert compact_json('{"a": 1, "a": 2}') is None  # a duplicate key would be lost
    assert compact_json('{"x": NaN}') is None
    assert compact_json('[1, Infinity]') is None
    assert compact_json('{"a":1}') is None  # already compact
    assert compact_json("not json {") is None
    assert compact_json("[1, 2] and more") is None
    assert compact_json('"just a string"') is None
    assert compact_json('{"s": "\\ud800 lone"}') == '{"s":"\\ud800 lone"}'  # kept escaped, still valid
    assert compact_json('{\n  "name": "Ünïcode",\n  "n": [1,\n 2]\n}') == '{"name":"Ünïcode","n":[1,2]}'


def test_prose_whitespace_outside_protected_spans_only() -> None:
    text = ("Hello   there.  \nNext line\t\t ok.\n\n\n\nLater.\n"
            "    indented stays\n```\ncode   with    runs  \n```\n"
            'He said "two  spaces" and `x  = 1` at https://a.io/x%20%20y {"k":  1}')
    out = compact_prose(text)
    assert out.startswith("Hello there.\nNext line ok.\n\nLater.\n    indented stays\n")
    assert protected_texts(out) == protected_texts(text)  # 0 changes inside protected spans
    assert compact_prose(out) == out


def chat(turns: int, result: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Check the order."}]
    for t in range(turns):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{t}", "type": "function", "function": {"name": "get", "arguments": '{"id": "A1"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{t}", "content": result})
    return {"model": "gpt-4o", "messages": messages}


def test_a_repeated_tool_output_refers_to_the_first_and_history_is_stable() -> None:
    result = json.dumps({"order": "A1", "items": [{"sku": f"S{i}", "qty": i} for i in range(20)]}, indent=2)
    bodies = []
    for turns in (1, 2, 3):
        body = chat(turns, result)
        snapshot = copy.deepcopy(body)
        out, stats = compact_body(body, "chat")
        assert body == snapshot
        assert stats.json_compacted == 2 * turns - (turns - 1)  # args each turn; the first result only
        assert stats.outputs_referenced == turns - 1
        bodies.append(out)
    first = bodies[-1]["messages"]
    assert json.loads(first[2]["content"]) == json.loads(result)
    assert first[4]["content"] == first[6]["content"] == "[same output as the tool result in message 3]"
    for shorter, longer in itertools.pairwise(bodies):
        n = len(shorter["messages"])
        assert longer["messages"][:n] == shorter["messages"]  # earlier turns re-sent unchanged


def test_short_repeated_outputs_and_non_json_outputs_are_kept() -> None:
    body = chat(2, "ok")
    out, stats = compact_body(body, "chat")
    assert out["messages"][4]["content"] == "ok" and stats.outputs_referenced == 0
    log = "total 8\n-rw-r--r--  1 root  root   12 a.txt  \n  indented   line\n"
    body = chat(1, log)
    assert compact_body(body, "chat")[0]["messages"][2]["content"] == log  # not JSON: untouched


def test_ansi_colour_codes_leave_tool_outputs_and_nothing_else_does() -> None:
    log = "\x1b[1m\x1b[31mFAILED\x1b[0m tests/test_a.py::test_x - assert 1 == 2\n  indented   line  \n"
    out, stats = compact_body(chat(1, log), "chat")
    assert out["messages"][2]["content"] == "FAILED tests/test_a.py::test_x - assert 1 == 2\n  indented   line  \n"
    assert stats.ansi_stripped == 1 and stats.json_compacted == 1  # the call's arguments
    moves = "progress\x1b[2K\x1b[1Gdone"  # cursor codes change what a terminal shows: kept
    assert compact_body(chat(1, moves), "chat")[0]["messages"][2]["content"] == moves
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a \x1b[31mred\x1b[0m word"}]}
    assert compress_openai_chat(body, "light").body["messages"][0]["content"] == "a \x1b[31mred\x1b[0m word"


def test_an_ansi_stripped_output_repeated_later_is_referenced_and_history_is_stable() -> None:
    log = "\x1b[32mPASSED\x1b[0m " + "tests/test_b.py::test_y " * 12
    bodies = [compact_body(chat(turns, log), "chat")[0] for turns in (1, 2)]
    assert bodies[1]["messages"][:3] == bodies[0]["messages"]
    assert bodies[1]["messages"][4]["content"] == "[same output as the tool result in message 3]"


def test_anthropic_tool_results_are_compacted_inside_blocks() -> None:
    pretty = json.dumps({"a": [1, 2, 3], "b": {"c": "d"}}, indent=2)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": pretty}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Thanks.   Next?"}]}]}
    result = compress_anthropic_messages(body, "standard")
    block = result.body["messages"][2]["content"][0]
    assert block["content"][0]["text"] == '{"a":[1,2,3],"b":{"c":"d"}}'
    assert block["cache_control"] == {"type": "ephemeral"}
    assert result.body["messages"][2]["content"][1]["text"] == "Thanks. Next?"
    assert result.json_compacted == 1 and result.whitespace_compacted == 1
    assert result.compaction_tokens_after < result.compaction_tokens_before
    assert compress_anthropic_messages(body, "off").body is body


def test_compaction_tokens_are_counted_apart_from_phrases() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "In order to   win, try."}]}
    lazy = compress_openai_chat(body, "light", count=False)
    assert lazy.compaction_texts == [("In order to   win, try.", "In order to win, try.")]
    assert lazy.changed_texts == [("In order to win, try.", "To win, try.")]
    counted = compress_openai_chat(body, "light")
    assert counted.compaction_tokens_before > counted.compaction_tokens_after
    assert counted.tokens_before > counted.tokens_after
