"""Conversation breakpoints (placement, movement, limits, client markers), prompt_cache_key, and the
mock's simulated provider caches that the e2e tests and the cost bench bill against."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.mock.caching import PromptCaches, openai_prompt
from gateway.transform import promptcache as pc

MARK = {"type": "ephemeral"}
SONNET = "claude-sonnet-4-5"


def words(n: int, seed: str) -> str:
    return " ".join(f"{seed}{i}" for i in range(n))


def conversation(turns: int, system: str = "You are a coding agent.") -> dict[str, Any]:
    """An agent loop: task, then (assistant tool call, user tool result) pairs, each ~500 tokens."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the bug. " + words(200, "task")}]
    for t in range(turns - 1):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {t}."},
            {"type": "tool_use", "id": f"tu{t}", "name": "bash", "input": {"command": f"cat file{t}.py"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"tu{t}", "content": words(400, f"out{t}x")}]})
    return {"model": SONNET, "max_tokens": 100, "system": system, "messages": messages,
            "tools": [{"name": "bash", "description": "Run", "input_schema": {"type": "object"}}]}


def marked_places(body: dict[str, Any]) -> list[tuple[str, int]]:
    out = [("tools", i) for i, t in enumerate(body.get("tools") or []) if t.get("cache_control")]
    system = body.get("system")
    if isinstance(system, list):
        out += [("system", i) for i, b in enumerate(system) if b.get("cache_control")]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list) and any(b.get("cache_control") for b in m["content"]):
            out.append(("message", i))
    return out


def test_breakpoints_follow_the_conversation_and_the_last_one_moves_forward() -> None:
    seen = []
    for turns in range(4, 9):
        body = conversation(turns)
        before = copy.deepcopy(body)
        marks = pc.mark_conversation(body, SONNET)
        assert body == before  # the client's dict is never mutated
        n = len(body["messages"])
        assert marks.placed[:2] == ["latest", "previous"]
        places = marked_places(marks.body)
        assert ("message", n - 1) in places and ("message", n - 3) in places
        assert pc.count_breakpoints(marks.body) <= pc.MAX_BREAKPOINTS
        seen.append(n - 1)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_nothing_below_the_models_minimum() -> None:
    short = conversation(1)  # ~250 tokens
    assert pc.mark_conversation(short, SONNET).placed == []
    assert not pc.worth_marking(short, SONNET)
    # ~1,900 tokens: enough for Sonnet 4.5 (1,024), not for Haiku 4.5 (4,096).
    mid = conversation(4)
    assert pc.mark_conversation(mid, SONNET).placed
    assert pc.mark_conversation(mid, "claude-haiku-4-5-20251001").placed == []
    assert [pc.min_tokens(m) for m in ("claude-opus-4-6", "claude-sonnet-4-6", "claude-sonnet-4-5",
                                       "claude-3-5-haiku-latest", "mystery")] == [4096, 2048, 1024, 2048, 1024]


def test_a_long_system_prompt_gets_its_own_breakpoint() -> None:
    body = conversation(3, system=words(1200, "rule"))
    marks = pc.mark_conversation(body, SONNET)
    assert marks.placed == ["latest", "previous", "system"]
    assert marks.body["system"] == [{"type": "text", "text": body["system"], "cache_control": MARK}]


@pytest.mark.parametrize("client", [1, 2, 3, 4])
def test_client_markers_are_kept_and_the_limit_holds(client: int) -> None:
    body = conversation(5, system=words(1200, "rule"))
    body["tools"][0]["cache_control"] = MARK
    for i in range(client - 1):  # further client markers on early turns
        body["messages"][2 * i + 1]["content"][0]["cache_control"] = MARK
    marks = pc.mark_conversation(body, SONNET)
    assert marks.client == client
    assert pc.count_breakpoints(marks.body) == min(4, client + 3)
    assert marks.body["tools"][0]["cache_control"] == MARK
    for i in range(client - 1):
        assert marks.body["messages"][2 * i + 1]["content"][0]["cache_control"] == MARK
    if client == 4:
        assert marks.placed == [] and marks.body is body


def test_string_content_and_thinking_blocks() -> None:
    body = {"model": SONNET, "messages": [
        {"role": "user", "content": words(1500, "q")},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
        {"role": "user", "content": words(50, "r")}]}
    out = pc.mark_conversation(body, SONNET).body
    assert out["messages"][2]["content"] == [{"type": "text", "text": body["messages"][2]["content"],
                                             "cache_control": MARK}]
    assert out["messages"][0]["content"][0]["cache_control"] == MARK
    assert out["messages"][1] is body["messages"][1]  # a thinking block is never marked


def test_cache_reads_cover_the_history_on_every_later_turn() -> None:
    caches = PromptCaches()
    shares = []
    cached_before = 0
    for turns in range(1, 16):
        body = pc.mark_conversation(conversation(turns), SONNET).body
        created, read, total = caches.anthropic(body)
        assert created + read <= total
        assert read == cached_before  # all the last request wrote is read now
        cached_before = created + read
        shares.append(read / total)
        if turns > 2:
            assert created > 0  # the new turn is written for the next request
    assert shares[0] == 0
    assert shares[-1] > 0.9


def test_mock_anthropic_cache_keys_ignore_markers_but_not_content() -> None:
    caches = PromptCaches()
    body = {"model": SONNET, "messages": [{"role": "user", "content": words(1500, "a")}]}
    marked = pc.mark_conversation(body, SONNET).body
    assert caches.anthropic(body) == (0, 0, caches.anthropic(body)[2])  # unmarked: nothing cached
    created, read, total = caches.anthropic(marked)
    assert created == total and read == 0
    assert caches.anthropic(marked)[:2] == (0, total)
    changed = copy.deepcopy(marked)
    changed["messages"][0]["content"][0]["text"] += " "
    assert caches.anthropic(changed)[1] == 0  # one byte differs: a miss
    short = {"model": SONNET, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": MARK}]}]}
    assert caches.anthropic(short)[:2] == (0, 0)  # under the minimum: not cached


def test_mock_openai_caches_prefixes_over_1024_tokens_in_128_token_steps() -> None:
    caches = PromptCaches()
    small = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 3000}]}
    prompt = openai_prompt("/v1/chat/completions", small)
    assert caches.openai("gpt-4o", prompt) == (0, len(prompt) // 4)
    assert caches.openai("gpt-4o", prompt)[0] == 0  # under 1,024 tokens: never cached
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "y" * 6000}]}
    first = caches.openai("gpt-4o", openai_prompt("/v1/chat/completions", big))
    assert first[0] == 0
    cached, total = caches.openai("gpt-4o", openai_prompt("/v1/chat/completions", big))
    assert cached >= 1024 and (cached - 1024) % 128 == 0 and total - cached < 128
    grown = {**big, "messages": [*big["messages"], {"role": "assistant", "content": "ok"},
                                 {"role": "user", "content": "z" * 2000}]}
    assert caches.openai("gpt-4o", openai_prompt("/v1/chat/completions", grown))[0] == cached
    assert caches.openai("gpt-4o-mini", openai_prompt("/v1/chat/completions", big))[0] == 0  # per model


def test_prompt_cache_key_is_per_tenant_and_conversation() -> None:
    turn1 = {"model": "gpt-4o", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}]}
    turn2 = {**turn1, "messages": [*turn1["messages"], {"role": "assistant", "content": "a"},
                                   {"role": "user", "content": "q2"}]}
    other = {**turn1, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "other"}]}
    key = pc.prompt_cache_key("team-a", turn1)
    assert key is not None and len(key) <= 64
    assert pc.prompt_cache_key("team-a", turn2) == key
    assert pc.prompt_cache_key("team-b", turn1) != key
    assert pc.prompt_cache_key("team-a", other) != key
    assert pc.prompt_cache_key("team-a", {**turn1, "prompt_cache_key": "mine"}) is None
    responses = {"model": "gpt-4o", "instructions": "i", "input": [{"role": "user", "content": "q"}]}
    assert pc.prompt_cache_key("team-a", responses) == pc.prompt_cache_key(
        "team-a", {**responses, "input": [*responses["input"], {"role": "user", "content": "more"}]})


def test_first_turn_marking_can_be_left_to_the_second_turn() -> None:
    one = {"model": SONNET, "messages": [{"role": "user", "content": words(1500, "q")}]}
    assert pc.mark_conversation(one, SONNET).placed == ["latest"]
    assert pc.mark_conversation(one, SONNET, first_turn=False).placed == []
    two = conversation(3)
    assert pc.mark_conversation(two, SONNET, first_turn=False).placed == pc.mark_conversation(two, SONNET).placed
