"""/v1/messages/count_tokens counted locally (Claude Code calls it before every turn)."""

from __future__ import annotations

import json
from typing import Any

from gateway.providers.translate import _text_of
from gateway.transform.compress.tokens import count_tokens as _count_text

IMAGE_TOKENS = 1600  # what Anthropic charges at most for one (resized) image


def _block_text(block: Any) -> tuple[str, int]:
    """(the text a block puts in the prompt, images it holds)."""
    if isinstance(block, str):
        return block, 0
    if not isinstance(block, dict):
        return "", 0
    kind = block.get("type")
    if kind == "text":
        return block.get("text", ""), 0
    if kind == "image":
        return "", 1
    if kind == "tool_use":
        return block.get("name", "") + json.dumps(block.get("input") or {}), 0
    if kind == "tool_result":
        inner = block.get("content")
        parts = [_block_text(b) for b in (inner if isinstance(inner, list) else [inner])]
        return "".join(t for t, _ in parts), sum(n for _, n in parts)
    return "", 0


def count_tokens(body: dict[str, Any], model: str) -> int:
    """/v1/messages/count_tokens counted locally: system, messages, tools, with `model`'s tokenizer.

    Like OpenAI's own accounting, each message adds 3 tokens of framing and the reply 3 more; an
    image counts IMAGE_TOKENS. The figure is an estimate for models whose tokenizer is not public.
    """
    texts: list[str] = []
    images = 0
    framing = 3
    system = body.get("system")
    if system:
        texts.append(system if isinstance(system, str) else _text_of(system))
        framing += 3
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        framing += 3
        content = msg.get("content")
        for block in [content] if isinstance(content, str) else (content or []):
            text, n = _block_text(block)
            texts.append(text)
            images += n
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            texts.append(tool.get("name", "") + (tool.get("description") or "")
                         + json.dumps(tool.get("input_schema") or {}, separators=(",", ":")))
    return sum(_count_text(t, model) for t in texts if t) + images * IMAGE_TOKENS + framing
