"""Prefix stability over the whole cost corpus: at turn N the bytes sent for turns 1..N-1 are
exactly those sent at turn N-1, through every layer (compaction, dedup, phrases, breakpoints).

Each corpus conversation (benchmarks/cost/corpus/) is replayed request by request, the way an agent
sends it: the history so far, ending before each assistant answer. Anthropic bodies are compared
block by block as the provider's cache keys them (gateway.mock.caching: markers and the str/text
spelling aside), OpenAI bodies message by message. Protected spans of prose are compared too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.mock.caching import anthropic_blocks, openai_prompt
from gateway.providers.translate import chat_to_anthropic
from gateway.transform import promptcache as pc
from gateway.transform.compress import compress_anthropic_messages, compress_openai_chat
from gateway.transform.compress.protect import protected_texts

CORPUS = sorted((Path(__file__).parents[2] / "benchmarks" / "cost" / "corpus").glob("*.json"))
MODEL = "claude-sonnet-4-5"


def requests(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat bodies an agent sent: the history up to each assistant answer."""
    messages = doc["messages"]
    return [{"model": "gpt-4o", "tools": doc["tools"], "messages": messages[:k]}
            for k in range(1, len(messages) + 1) if k == len(messages) or messages[k]["role"] == "assistant"]


def anthropic_sent(chat: dict[str, Any]) -> dict[str, Any]:
    """What the gateway sends an Anthropic deployment: compacted and compressed, translated, marked."""
    compressed = compress_openai_chat(chat, "standard", count=False).body
    translated = chat_to_anthropic(compressed, MODEL)
    return pc.mark_conversation(translated, MODEL).body


def native_sent(chat: dict[str, Any]) -> dict[str, Any]:
    """A native /v1/messages client: translated by the client, then compressed and marked by the gateway."""
    native = chat_to_anthropic(chat, MODEL)
    return pc.mark_conversation(compress_anthropic_messages(native, "standard", count=False).body, MODEL).body


def assert_prefix(before: list[bytes], after: list[bytes], where: str) -> None:
    assert len(after) >= len(before), where
    for i, (a, b) in enumerate(zip(before, after, strict=False)):
        assert a == b, f"{where}: block {i} changed from one turn to the next"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_layer_keeps_earlier_turns_byte_identical(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["source"] and doc["licence"]
    previous: dict[str, list[bytes]] = {}
    last_prompt = b""
    for n, chat in enumerate(requests(doc)):
        sent = {
            "openai-light": compress_openai_chat(chat, "light", count=False).body,
            "openai-standard": compress_openai_chat(chat, "standard", count=False).body,
        }
        blocks = {name: [json.dumps(m).encode() for m in body["messages"]] for name, body in sent.items()}
        blocks["anthropic-translated"] = [raw for raw, _ in anthropic_blocks(anthropic_sent(chat))]
        blocks["anthropic-native"] = [raw for raw, _ in anthropic_blocks(native_sent(chat))]
        for name, now in blocks.items():
            if name in previous:
                assert_prefix(previous[name], now, f"{path.stem} turn {n} {name}")
        previous = blocks
        # The OpenAI prompt bytes the provider's prefix cache sees grow by appending only.
        assert openai_prompt("/v1/chat/completions", sent["openai-light"]).startswith(last_prompt)
        last_prompt = openai_prompt("/v1/chat/completions", sent["openai-light"])


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_no_change_inside_protected_spans_of_prose(path: Path) -> None:
    doc = json.loads(path.read_text())
    chat = {"model": "gpt-4o", "tools": doc["tools"], "messages": doc["messages"]}
    for level in ("light", "standard"):
        out = compress_openai_chat(chat, level, count=False).body
        for before, after in zip(chat["messages"], out["messages"], strict=True):
            if before["role"] == "tool" or not isinstance(before.get("content"), str):
                continue
            if "[same as the document in" in after["content"]:
                continue  # a deduplicated paragraph (never one with a protected span) was replaced
            assert protected_texts(after["content"]) == protected_texts(before["content"])


def test_dedup_and_references_never_rewrite_an_earlier_turn() -> None:
    """The corpus has no long repeated paragraph; this conversation repeats one (exactly and nearly)
    and a tool output, and grows turn by turn at the standard level with an embedder."""
    import numpy as np

    def embed(texts: list[str]) -> Any:
        # Deterministic bag-of-words vectors: near copies score above the threshold.
        rows = []
        for t in texts:
            v = np.zeros(64)
            for w in t.lower().split():
                v[hash(w) % 64] += 1.0
            rows.append(v / (np.linalg.norm(v) or 1.0))
        return np.array(rows)

    doc = ("The deployment runbook says to drain the node, wait for the queue to empty, then restart "
           "the service and watch the error rate for ten minutes before moving to the next node. ") * 4
    near = doc.replace("ten minutes", "fifteen minutes")
    output = json.dumps({"rows": [{"id": i, "state": "ok"} for i in range(30)]}, indent=2)
    turns = [f"Read this:\n\n{doc}", f"And this:\n\n{doc}", f"Also:\n\n{near}", "Done?"]
    messages: list[dict[str, Any]] = []
    previous: list[Any] = []
    for t, text in enumerate(turns):
        messages.append({"role": "user", "content": text})
        for label in ("light", "standard"):
            out = compress_openai_chat({"model": "gpt-4o", "messages": messages}, label, embed=embed, count=False)
            sent = json.loads(json.dumps(out.body["messages"]))  # a copy: `messages` keeps growing
            if label == "standard":
                assert sent[: len(previous)] == previous
                previous = sent
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{t}", "type": "function", "function": {"name": "q", "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{t}", "content": output})
    final = compress_openai_chat({"model": "gpt-4o", "messages": messages}, "standard", embed=embed, count=False)
    assert final.blocks_deduped >= 1 and final.outputs_referenced == len(turns) - 1
    alone = compress_openai_chat({"model": "gpt-4o", "messages": messages[:1]}, "standard", embed=embed, count=False)
    assert final.body["messages"][0]["content"] == alone.body["messages"][0]["content"]
