"""Multi-turn cost layers end to end: conversation breakpoints and lossless compaction through both SDKs.

Official anthropic and openai SDKs against real Granian workers (2) and `gateway mock`, which
simulates the providers' prompt caches on exact prefix bytes. What the gateway sent is read back
from the mock (`GET /_mock/requests`), with the usage the mock billed for it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from gateway.transform import promptcache as pc

from .conftest import Proc, mock_requests, start_mock, start_process

MARK = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conv")


@pytest.fixture(scope="module")
def mock(workdir: Path) -> Iterator[Proc]:
    p = start_mock(workdir, "conv-mock")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gw(workdir: Path, mock: Proc) -> Iterator[Proc]:
    cfg = {
        "auth": {"enabled": False},
        "retries": {"attempts": 0},
        "store": {"embedded_path": str(workdir / "store.db")},
        "cache": {"enabled": False},
        "providers": {"claude": {"kind": "anthropic", "base_url": mock.url},
                      "openai": {"kind": "openai", "base_url": mock.url + "/v1"}},
        "models": [
            {"name": "claude-house", "deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            {"name": "claude-chat", "deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            {"name": "gpt-4o", "deployments": [{"provider": "openai"}]},
        ],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = start_process(["serve", "--config", str(path), "--workers", "2"], workdir / "gateway.log", ready_path="/readyz")
    yield p
    p.stop()


def policy(tag: str) -> str:
    """A system prompt long enough for the gateway to mark (over 4,000 characters), unique per test."""
    rules = " ".join(f"Rule {i}: quote order {i * 7} and check ledger {i % 5} before replying." for i in range(80))
    return f"Agent policy {tag}. {rules}"


def sent_to_mock(mock: Proc, tag: str) -> list[dict[str, Any]]:
    return [r for r in mock_requests(mock) if tag in json.dumps(r["body"])]


def marked_messages(body: dict[str, Any]) -> list[int]:
    return [i for i, m in enumerate(body["messages"]) if isinstance(m["content"], list)
            and any(isinstance(b, dict) and b.get("cache_control") for b in m["content"])]


def tool_output(turn: int) -> str:
    return " ".join(f"line {turn}.{i}: value {i * turn}" for i in range(120))


def grow(messages: list[dict[str, Any]], turn: int) -> None:
    """One agent step in Anthropic shape: a tool call and its (long) result."""
    messages.append({"role": "assistant", "content": [
        {"type": "text", "text": f"Step {turn}."},
        {"type": "tool_use", "id": f"toolu_{turn}", "name": "bash", "input": {"command": f"cat part{turn}"}}]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": tool_output(turn)}]})


TOOLS = [{"name": "bash", "description": "Run a command", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}}}}]


def test_breakpoints_move_forward_and_history_is_read_from_cache(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Task {tag}: fix the parser."}]
    usages = []
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20) as client:
        for turn in range(6):
            if turn:
                grow(messages, turn)
            kw = {"model": "claude-house", "max_tokens": 50, "system": policy(tag), "tools": TOOLS,
                  "messages": messages, "tool_choice": {"type": "none"}}
            if turn % 2:
                with client.messages.stream(**kw) as s:  # type: ignore[arg-type]
                    usages.append(s.get_final_message().usage)
            else:
                usages.append(client.messages.create(**kw).usage)  # type: ignore[call-overload]
    bodies = [r["body"] for r in sent_to_mock(mock, tag)]
    assert len(bodies) == 6
    latest = [marked_messages(b) for b in bodies]
    for turn, (body, marks) in enumerate(zip(bodies, latest, strict=True)):
        n = len(body["messages"])
        assert n - 1 in marks  # the last breakpoint is on the newest turn
        if turn:
            assert n - 3 in marks  # and the previous turn's end is marked to read what it wrote
        assert pc.count_breakpoints(body) <= pc.MAX_BREAKPOINTS
        assert body["system"][-1]["cache_control"] == MARK
    assert [max(m) for m in latest] == [0, 2, 4, 6, 8, 10]
    # Every later turn reads all that the turn before wrote; turns 2+ are mostly cache reads.
    for before, now in itertools.pairwise(usages):
        assert now.cache_read_input_tokens == before.cache_read_input_tokens + before.cache_creation_input_tokens
    for u in usages[1:]:
        total = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
        assert u.cache_read_input_tokens / total >= 0.6
    assert usages[-1].cache_read_input_tokens / (usages[-1].input_tokens + usages[-1].cache_read_input_tokens
                                                 + usages[-1].cache_creation_input_tokens) >= 0.8


def test_client_markers_are_kept_and_four_is_the_limit(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    messages: list[dict[str, Any]] = [{"role": "user", "content": [
        {"type": "text", "text": f"Task {tag}.", "cache_control": MARK}]}]
    for turn in range(1, 4):
        grow(messages, turn)
    tools = [{**TOOLS[0], "cache_control": MARK}]
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20) as client:
        client.messages.create(model="claude-house", max_tokens=50, system=policy(tag), tools=tools,  # type: ignore
                               messages=messages, tool_choice={"type": "none"})  # type: ignore[arg-type]
        messages[2]["content"][0]["cache_control"] = MARK  # a third client marker: room for one more
        client.messages.create(model="claude-house", max_tokens=50, system=policy(tag), tools=tools,  # type: ignore
                               messages=messages, tool_choice={"type": "none"})  # type: ignore[arg-type]
    first, second = (r["body"] for r in sent_to_mock(mock, tag))
    for body in (first, second):
        assert body["tools"] == tools
        assert body["messages"][0]["content"][0]["cache_control"] == MARK
        assert pc.count_breakpoints(body) == 4
    assert marked_messages(first) == [0, 4, 6]  # the client's, then previous and latest turns
    assert second["messages"][2]["content"][0]["cache_control"] == MARK
    assert marked_messages(second) == [0, 2, 6]  # only the latest turn fitted


def test_prompt_cache_opt_out_sends_no_marker(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Task {tag}."}]
    grow(messages, 1)
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20) as client:
        usage = client.messages.create(model="claude-house", max_tokens=50, system=policy(tag),  # type: ignore
                                       messages=messages, extra_headers={"x-gateway-prompt-cache": "off"}).usage
    (body,) = (r["body"] for r in sent_to_mock(mock, tag))
    assert pc.count_breakpoints(body) == 0 and body["system"] == policy(tag)
    assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0


def test_translated_chat_conversation_is_marked_and_cached(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    messages: list[dict[str, Any]] = [{"role": "system", "content": policy(tag)},
                                      {"role": "user", "content": "Fix the parser."}]
    cached = []
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        for turn in range(4):
            if turn:
                messages.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{turn}", "type": "function",
                     "function": {"name": "bash", "arguments": json.dumps({"command": f"cat part{turn}"})}}]})
                messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": tool_output(turn)})
            usage = client.chat.completions.create(model="claude-chat", messages=messages).usage  # type: ignore
            assert usage is not None and usage.prompt_tokens_details is not None
            cached.append(usage.prompt_tokens_details.cached_tokens)
    bodies = [r["body"] for r in sent_to_mock(mock, tag)]
    assert [max(marked_messages(b)) for b in bodies] == [0, 2, 4, 6]
    assert cached[0] == 0 and all(b > a for a, b in itertools.pairwise(cached))


def test_json_tool_results_are_compacted_losslessly_and_opt_out_is_honoured(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    record = {"reservation": tag, "flights": [{"number": f"HAT{i:03d}", "date": "2024-05-20", "seats": i}
                                              for i in range(8)], "note": "window  seat, \"quoted\""}
    pretty = json.dumps(record, indent=2)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"Look up {tag}."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{\n  "id": "A1"\n}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": pretty},
    ]
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
        client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                       extra_headers={"x-gateway-compression": "off"})
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=20) as claude:
        claude.messages.create(model="claude-house", max_tokens=50, messages=[  # type: ignore[misc]
            {"role": "user", "content": f"Look up {tag}."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": pretty}]}])
    compacted, untouched, native = (r["body"] for r in sent_to_mock(mock, tag))
    tool = compacted["messages"][2]["content"]
    assert len(tool) < len(pretty) and "\n" not in tool
    assert json.loads(tool) == record  # round-trips to an equal value, the quoted string unchanged
    assert compacted["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"id":"A1"}'
    assert untouched["messages"] == messages  # opted out
    result = native["messages"][2]["content"][0]["content"]
    assert json.loads(result) == record and len(result) < len(pretty)
