"""Compression of whole request bodies: finds the prose in OpenAI chat, completions and Responses
bodies and in Anthropic messages, and rewrites it; compacts their tool results and arguments.

Order per body: lossless compaction of tool texts (compact.py), then per prose text whitespace
compaction, dedup against earlier texts, phrase rewriting. Every step depends only on a text and
the texts before it, so a conversation's earlier turns are re-sent byte for byte.

Pure functions of (body, level, embed): no I/O, no shared mutable state, the input is never
mutated (only the containers on the path to a changed text are copied), so a caller may run a
large body in a worker thread. Tool calls and tool results get only the lossless compaction;
any block that is not plain text (images, documents, thinking blocks with their signatures) is
skipped entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from gateway.transform.compress.compact import compact_body, compact_prose
from gateway.transform.compress.dedup import Embedder, dedup_units
from gateway.transform.compress.phrases import replace_phrases
from gateway.transform.compress.protect import compress_prose
from gateway.transform.compress.settings import spec_for
from gateway.transform.compress.tokens import count_tokens

__all__ = ["CompressionResult", "compress_anthropic_messages", "compress_openai_chat",
           "compress_openai_completion", "compress_openai_responses", "compress_text"]

# Where a text sits: (the body's field, index in that list or -1, content part index or -1).
_Slot = tuple[str, int, int]
_Unit = tuple[_Slot, str, str]  # slot, label for dedup references, text


class CompressionResult(msgspec.Struct):
    """The outgoing body and what compression did to it.

    Tokens count the texts compression may touch (cl100k_base, see tokens.py); both are 0 when the
    level is "off", since nothing was measured. The compaction layer is counted apart
    (`compaction_*`): tool texts, and the prose whitespace step (its output is what phrases and
    dedup start from, so the two savings add up to the whole).
    """

    body: dict[str, Any]
    changed: bool
    tokens_before: int
    tokens_after: int
    phrases_replaced: int
    blocks_deduped: int
    # count=False: the (original, compressed) texts that changed, for counting off the request path
    changed_texts: list[tuple[str, str]] = []
    json_compacted: int = 0  # tool results / arguments re-serialised compactly
    outputs_referenced: int = 0  # tool outputs replaced by a reference to an identical earlier one
    whitespace_compacted: int = 0  # prose texts whose whitespace was compacted
    compaction_tokens_before: int = 0
    compaction_tokens_after: int = 0
    compaction_texts: list[tuple[str, str]] = []  # count=False: (original, compacted) pairs


def compress_text(text: str, level: str) -> tuple[str, int]:
    """Rewrite verbose phrases in the prose of `text`, leaving protected spans as they are."""
    return compress_prose(text, lambda prose: replace_phrases(prose, level))


def _text_parts(content: Any, kind: str = "text") -> list[tuple[int, str]]:
    """(part index or -1, text) of a content that is a str or a list of {"type": kind} parts."""
    if isinstance(content, str):
        return [(-1, content)]
    if isinstance(content, list):
        return [
            (k, part["text"])
            for k, part in enumerate(content)
            if isinstance(part, dict) and part.get("type") == kind and isinstance(part.get("text"), str)
        ]
    return []


def _openai_units(body: dict[str, Any]) -> list[_Unit]:
    units: list[_Unit] = []
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") in ("tool", "function"):
            continue
        if message.get("tool_calls") or message.get("function_call"):
            continue  # an assistant turn that calls tools is replayed exactly
        for k, text in _text_parts(message.get("content")):
            units.append((("messages", i, k), f"message {i + 1}", text))
    return units


def _anthropic_units(body: dict[str, Any]) -> list[_Unit]:
    # Only "text" blocks are collected, so tool_use, tool_result, thinking (signed) and documents
    # are never touched. A text block keeps its other keys, cache_control included.
    units: list[_Unit] = [
        (("system", -1, k), "the system prompt", text) for k, text in _text_parts(body.get("system"))
    ]
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict):
            for k, text in _text_parts(message.get("content")):
                units.append((("messages", i, k), f"message {i + 1}", text))
    return units


def _responses_units(body: dict[str, Any]) -> list[_Unit]:
    # The Responses API: `instructions`, and `input` as a string or a list of items. Only message
    # items (a role and text content) are prose; function calls, their outputs, reasoning items
    # and anything else are replayed exactly.
    units: list[_Unit] = []
    if isinstance(body.get("instructions"), str):
        units.append((("instructions", -1, -1), "the instructions", body["instructions"]))
    items = body.get("input")
    if isinstance(items, str):
        units.append((("input", -1, -1), "the input", items))
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or item.get("type", "message") != "message" or "role" not in item:
            continue
        for k, text in _text_parts(item.get("content"), "input_text"):
            units.append((("input", i, k), f"input item {i + 1}", text))
    return units


def _completion_units(body: dict[str, Any]) -> list[_Unit]:
    # /v1/completions: `prompt` as a string or a list of strings (token-id prompts are left alone).
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [(("prompt", -1, -1), "the prompt", prompt)]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return [(("prompt", i, -1), f"prompt {i + 1}", p) for i, p in enumerate(prompt)]
    return []


def _with_text(container: Any, k: int, text: str) -> Any:
    """`container` (a str content or a list of parts) with part k's text replaced, copied."""
    if k < 0:
        return text
    parts = list(container)
    parts[k] = {**parts[k], "text": text}
    return parts


def _rebuild(body: dict[str, Any], changes: dict[_Slot, str]) -> dict[str, Any]:
    new_body = dict(body)
    lists: dict[str, list[Any]] = {}  # the body's lists on the path to a change, copied once each
    for (where, i, k), text in changes.items():
        if i < 0:
            new_body[where] = _with_text(new_body[where], k, text)
            continue
        items = lists.get(where)
        if items is None:
            items = lists[where] = list(body[where])
        item = items[i]
        if isinstance(item, str):  # a prompt in a list of prompts
            items[i] = text
        else:
            items[i] = {**item, "content": _with_text(item["content"], k, text)}
    new_body.update(lists)
    return new_body


def _compress(
    body: dict[str, Any], kind: str, find_units: Callable[[dict[str, Any]], list[_Unit]], level: str,
    embed: Embedder | None, count: bool = True,
) -> CompressionResult:
    spec = spec_for(level)
    if spec.phrases is None:
        return CompressionResult(body, False, 0, 0, 0, 0)
    compaction: list[tuple[str, str]] = []
    json_compacted = referenced = whitespace = ansi = 0
    if spec.compact:
        body, stats = compact_body(body, kind)
        compaction = stats.texts
        json_compacted, referenced, ansi = stats.json_compacted, stats.outputs_referenced, stats.ansi_stripped
    units = find_units(body)
    originals = [text for _, _, text in units]
    starts = [compact_prose(text) for text in originals] if spec.compact else originals
    for original, start in zip(originals, starts, strict=True):
        if start != original:
            whitespace += 1
            compaction.append((original, start))
    texts = starts
    deduped = 0
    if spec.dedup_exact and texts:
        texts, deduped = dedup_units(
            [(label, text) for (_, label, _), text in zip(units, texts, strict=True)],
            min_chars=spec.dedup_min_chars,
            embed=embed if spec.dedup_near else None,
            near_threshold=spec.near_threshold,
        )
    replaced = 0
    changes: dict[_Slot, str] = {}
    pairs: list[tuple[str, str]] = []
    before = after = 0
    for (slot, _, original), start, text in zip(units, starts, texts, strict=True):
        new, n = compress_text(text, spec.phrases)
        replaced += n
        if new != original:
            changes[slot] = new
        if new != start:
            pairs.append((start, new))
        elif count:
            tokens = count_tokens(start)
            before += tokens
            after += tokens
    c_before = c_after = 0
    if count:
        for original, new in pairs:
            before += count_tokens(original)
            after += count_tokens(new)
        for original, new in compaction:
            c_before += count_tokens(original)
            c_after += count_tokens(new)
        pairs, compaction = [], []
    if not changes and not json_compacted and not referenced and not ansi:
        return CompressionResult(body, False, before, after, 0, 0)
    new_body = _rebuild(body, changes) if changes else body
    return CompressionResult(new_body, True, before, after, replaced, deduped, pairs,
                             json_compacted=json_compacted, outputs_referenced=referenced,
                             whitespace_compacted=whitespace, compaction_tokens_before=c_before,
                             compaction_tokens_after=c_after, compaction_texts=compaction)


def compress_openai_chat(
    body: dict[str, Any], level: str, embed: Embedder | None = None, *, count: bool = True
) -> CompressionResult:
    """Compress an OpenAI /v1/chat/completions body at `level` ("off", "light", "standard").

    count=False leaves token counting (most of the cost) to the caller: `changed_texts` holds the
    pairs to count, and the token fields are 0."""
    return _compress(body, "chat", _openai_units, level, embed, count)


def compress_anthropic_messages(
    body: dict[str, Any], level: str, embed: Embedder | None = None, *, count: bool = True
) -> CompressionResult:
    """Compress an Anthropic /v1/messages body at `level` ("off", "light", "standard")."""
    return _compress(body, "messages", _anthropic_units, level, embed, count)


def compress_openai_responses(
    body: dict[str, Any], level: str, embed: Embedder | None = None, *, count: bool = True
) -> CompressionResult:
    """Compress an OpenAI /v1/responses body: the instructions and the input's message text."""
    return _compress(body, "responses", _responses_units, level, embed, count)


def compress_openai_completion(
    body: dict[str, Any], level: str, embed: Embedder | None = None, *, count: bool = True
) -> CompressionResult:
    """Compress a legacy /v1/completions body: its prompt (a string or a list of strings)."""
    return _compress(body, "completions", _completion_units, level, embed, count)
