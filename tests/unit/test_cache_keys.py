"""Canonical form: what lands in the partition, what in the exact key, what is compared."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.keys import compute


def body(text: Any = "What is the capital of France?", **params: Any) -> dict[str, Any]:
    params.setdefault("model", "gpt-4o-mini")
    return {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        **params,
    }


def test_same_request_same_keys_and_stream_is_not_part_of_it() -> None:
    a = compute("t", "chat", body(temperature=0))
    b = compute(
        "t",
        "chat",
        {**body(temperature=0.0), "stream": True, "stream_options": {"include_usage": True}, "user": "u1"},
    )
    assert a == b
    assert a.text == "What is the capital of France?" and not a.tools
    assert len(a.partition) == 32 and len(a.exact) == 96 and a.exact.startswith(a.partition)


def test_missing_temperature_is_the_default() -> None:
    assert compute("t", "chat", body()).partition == compute("t", "chat", body(temperature=1)).partition
    assert compute("t", "chat", body()).partition != compute("t", "chat", body(temperature=0)).partition


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"top_p": 0.5},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"stop": ["\n"]},
        {"seed": 1},
        {"response_format": {"type": "json_object"}},
        {"logit_bias": {"1": 5}},
        {"n": 2},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"tool_choice": "none"},
    ],
)
def test_every_output_parameter_changes_the_partition(change: dict[str, Any]) -> None:
    base = compute("t", "chat", body(temperature=0))
    other = compute("t", "chat", body(temperature=0, **change))
    assert other.partition != base.partition and other.exact != base.exact


def test_last_user_turn_is_outside_the_partition() -> None:
    a = compute("t", "chat", body("one"))
    b = compute("t", "chat", body("two"))
    assert a.partition == b.partition and a.exact != b.exact
    earlier = body("one")
    earlier["messages"][1:1] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert compute("t", "chat", earlier).partition != a.partition
    assert compute("other", "chat", body("one")).partition != a.partition
    assert compute("t", "messages", body("one")).partition != a.partition


def test_text_of_the_last_user_turn() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert compute("t", "chat", body(parts)).text == "a\nb"
    image = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert compute("t", "chat", body(image)).text is None
    tool_result = [{"type": "tool_result", "tool_use_id": "x", "content": "42"}]
    assert compute("t", "messages", body(tool_result)).text is None
    assert compute("t", "chat", body(tools=[{"type": "function"}])).tools
    assert compute("t", "completions", {"model": "m", "prompt": "Say hi"}).text == "Say hi"
    assert compute("t", "completions", {"model": "m", "prompt": ["a", "b"]}).text is None
    assert compute("t", "chat", {"model": "m", "messages": []}).text is None


def test_embeddings_partition_by_parameters_and_key_by_input() -> None:
    base = {"model": "text-embedding-3-small", "input": "hello"}
    k = compute("t", "embeddings", base)
    assert k.text is None and not k.tools  # the exact key alone: no intent, near-miss or semantic phase
    # Omitted encoding_format is the provider's default, float; "user" is bookkeeping.
    assert compute("t", "embeddings", {**base, "encoding_format": "float", "user": "u"}) == k
    same_partition = [{**base, "input": "hello!"}, {**base, "input": ["hello"]}]
    other_partition = [{**base, "model": "text-embedding-3-large"}, {**base, "dimensions": 256},
                       {**base, "encoding_format": "base64"}]
    for b in same_partition:
        o = compute("t", "embeddings", b)
        assert o.partition == k.partition and o.exact != k.exact, b
    for b in other_partition:
        assert compute("t", "embeddings", b).partition != k.partition, b
    assert compute("other-key", "embeddings", base).partition != k.partition
    assert compute("t", "chat", base).partition != k.partition
