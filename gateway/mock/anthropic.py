"""Pure builders of the mock upstream's Anthropic /v1/messages answers, plain and streamed."""

from __future__ import annotations

import json
from typing import Any

from gateway.mock.responses import answer_text, approx_tokens, split_chunks, tool_arguments, wants_tool


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages or []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
            if texts:
                return " ".join(texts)
    return ""


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(b.get("text", "") for b in system if isinstance(b, dict))
    return ""


def message(body: dict[str, Any], n_id: int, cache: tuple[int, ...]) -> dict[str, Any]:
    """`cache` = (cache_creation_input_tokens, cache_read_input_tokens, prompt tokens) from the
    simulated prompt cache (gateway.mock.caching); without the third, the prompt is estimated."""
    prompt = _last_user_text(body.get("messages") or [])
    tool = wants_tool(body, anthropic=True)
    if tool:
        content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_mock{n_id}", "name": tool["name"],
                                          "input": json.loads(tool_arguments(prompt))}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": answer_text(prompt)}]
        stop = "end_turn"
    max_tokens = int(body.get("max_tokens") or 1024)
    out_tokens = approx_tokens(answer_text(prompt))
    if out_tokens > max_tokens:
        stop = "max_tokens"
    created, read = cache[0], cache[1]
    total = cache[2] if len(cache) > 2 else approx_tokens(json.dumps(body.get("messages") or []) + system_text(body))
    input_tokens = total - created - read
    return {
        "id": f"msg_mock{n_id}", "type": "message", "role": "assistant", "model": body.get("model", "mock"),
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": max(1, input_tokens), "output_tokens": out_tokens,
                  "cache_creation_input_tokens": created, "cache_read_input_tokens": read},
    }


def events(body: dict[str, Any], n_id: int, chunks: int,
           cache: tuple[int, ...]) -> list[tuple[str, dict[str, Any]]]:
    full = message(body, n_id, cache)
    usage = full["usage"]
    start = {**full, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    ev: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(full["content"]):
        if block["type"] == "text":
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}}))
            for piece in split_chunks(block["text"], chunks):
                ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": piece}}))
        else:
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {**block, "input": {}}}))
            for piece in split_chunks(json.dumps(block["input"]), max(1, chunks)):
                ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "input_json_delta", "partial_json": piece}}))
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": full["stop_reason"], "stop_sequence": None},
                                 "usage": {"output_tokens": usage["output_tokens"]}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev
