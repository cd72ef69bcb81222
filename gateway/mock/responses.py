"""Pure builders of the mock upstream's answers in OpenAI and Anthropic shapes (no I/O)."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

import xxhash


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
    return ""


def answer_text(prompt: str) -> str:
    return f"This is a mock answer to: {prompt[:200]}" if prompt else "This is a mock answer."


def split_chunks(text: str, count: int) -> list[str]:
    """`text` cut into `count` pieces (at least one) that join back to it exactly."""
    count = max(1, count)
    if len(text) < count:
        text = text + " " * (count - len(text))
    step = len(text) / count
    cuts = [round(i * step) for i in range(count + 1)]
    return [text[cuts[i]:cuts[i + 1]] for i in range(count)]


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def wants_tool(body: dict[str, Any], anthropic: bool) -> dict[str, Any] | None:
    """The tool the mock 'decides' to call: the first one, unless tools are off or a result just came."""
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if anthropic:
        content = last.get("content")
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return None
        return {"name": tools[0].get("name", "tool")}
    if last.get("role") == "tool":
        return None
    return {"name": (tools[0].get("function") or {}).get("name", "tool")}


def tool_arguments(prompt: str) -> str:
    return json.dumps({"query": prompt[:100], "limit": 3})


# ---------------------------------------------------------------- OpenAI chat


def prompt_usage(body: dict[str, Any], usage: tuple[int, int] | int) -> tuple[int, int]:
    """(cached, prompt tokens): the simulated cache's pair, or a fixed cached count with the prompt estimated."""
    if isinstance(usage, tuple):
        return usage
    return usage, approx_tokens(json.dumps(body.get("messages") or []))


def chat_completion(body: dict[str, Any], n_id: int, usage: tuple[int, int] | int) -> dict[str, Any]:
    """`usage` = (cached tokens, prompt tokens) from the simulated prompt cache (see `prompt_usage`)."""
    prompt = last_user_text(body.get("messages") or [])
    tool = wants_tool(body, anthropic=False)
    cached_tokens, prompt_tokens = prompt_usage(body, usage)
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        if tool:
            message: dict[str, Any] = {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_mock_{n_id}_{i}", "type": "function",
                                "function": {"name": tool["name"], "arguments": tool_arguments(prompt)}}],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": answer_text(prompt), "refusal": None}
            finish = "stop"
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    text = answer_text(prompt)
    completion_tokens = approx_tokens(text) * n
    return {
        "id": f"chatcmpl-mock{n_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock"),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt_tokens)},
        },
        "system_fingerprint": "fp_mock",
    }


def chat_chunks(body: dict[str, Any], n_id: int, chunks: int,
                usage: tuple[int, int] | int) -> list[dict[str, Any]]:
    """The stream of chat.completion.chunk objects for `body` (without the final [DONE])."""
    full = chat_completion(body, n_id, usage)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
            "model": full["model"], "system_fingerprint": "fp_mock"}

    def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    out = []
    for choice in full["choices"]:
        i = choice["index"]
        msg = choice["message"]
        out.append(chunk({"role": "assistant", "content": ""}, index=i))
        if msg.get("tool_calls"):
            call = msg["tool_calls"][0]
            out.append(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"], "arguments": ""}}]},
                             index=i))
            for piece in split_chunks(call["function"]["arguments"], max(1, chunks - 1)):
                out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, index=i))
        else:
            for piece in split_chunks(msg["content"], chunks):
                out.append(chunk({"content": piece}, index=i))
        out.append(chunk({}, choice["finish_reason"], index=i))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append({**base, "choices": [], "usage": full["usage"]})
    return out


# ---------------------------------------------------------------- other OpenAI endpoints


def text_completion(body: dict[str, Any], n_id: int) -> dict[str, Any]:
    prompt = body.get("prompt") or ""
    prompt = prompt if isinstance(prompt, str) else str(prompt[0] if prompt else "")
    text = answer_text(prompt)
    pt, ct = approx_tokens(prompt), approx_tokens(text)
    return {
        "id": f"cmpl-mock{n_id}", "object": "text_completion", "created": int(time.time()),
        "model": body.get("model", "mock"),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }


def completion_chunks(body: dict[str, Any], n_id: int, chunks: int) -> list[dict[str, Any]]:
    full = text_completion(body, n_id)
    base = {"id": full["id"], "object": "text_completion", "created": full["created"], "model": full["model"]}
    out = [{**base, "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
           for piece in split_chunks(full["choices"][0]["text"], chunks)]
    out[-1]["choices"][0]["finish_reason"] = "stop"
    return out


def _vector(text: str, dims: int) -> list[float]:
    seed = xxhash.xxh64_intdigest(text.encode())
    vals = []
    for i in range(dims):
        seed = (seed * 6364136223846793005 + 1442695040888963407 + i) & 0xFFFFFFFFFFFFFFFF
        vals.append(((seed >> 33) / 2**31) - 1.0)
    norm = sum(v * v for v in vals) ** 0.5 or 1.0
    return [v / norm for v in vals]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else list(inputs or [])
    dims = int(body.get("dimensions") or 16)
    data = []
    for i, item in enumerate(items):
        vec = _vector(str(item), dims)
        emb: Any = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(approx_tokens(str(x)) for x in items)
    return {"object": "list", "data": data, "model": body.get("model", "mock"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def responses_object(body: dict[str, Any], n_id: int, usage: tuple[int, int] | None = None) -> dict[str, Any]:
    inp = body.get("input")
    prompt = inp if isinstance(inp, str) else last_user_text(inp or [])
    text = answer_text(prompt)
    cached, it = usage or (0, approx_tokens(prompt))
    ot = approx_tokens(text)
    return {
        "id": f"resp_mock{n_id}", "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": body.get("model", "mock"), "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "metadata": {}, "parallel_tool_calls": True,
        "temperature": body.get("temperature", 1.0), "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "output": [{
            "type": "message", "id": f"msg_mock{n_id}", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "usage": {"input_tokens": it, "output_tokens": ot, "total_tokens": it + ot,
                  "input_tokens_details": {"cached_tokens": min(cached, it)},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


def responses_events(body: dict[str, Any], n_id: int, chunks: int,
                     usage: tuple[int, int] | None = None) -> list[tuple[str, dict[str, Any]]]:
    full = responses_object(body, n_id, usage)
    text = full["output"][0]["content"][0]["text"]
    pending = {**full, "status": "in_progress", "output": [], "usage": None}
    item = {**full["output"][0], "status": "in_progress", "content": []}
    seq = iter(range(1_000_000))
    ev: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "response": pending}),
        ("response.in_progress", {"type": "response.in_progress", "response": pending}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}),
        ("response.content_part.added", {"type": "response.content_part.added", "item_id": item["id"],
                                         "output_index": 0, "content_index": 0,
                                         "part": {"type": "output_text", "text": "", "annotations": []}}),
    ]
    for piece in split_chunks(text, chunks):
        ev.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                  "output_index": 0, "content_index": 0, "delta": piece,
                                                  "logprobs": []}))
    ev += [
        ("response.output_text.done", {"type": "response.output_text.done", "item_id": item["id"],
                                       "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        ("response.content_part.done", {"type": "response.content_part.done", "item_id": item["id"],
                                        "output_index": 0, "content_index": 0,
                                        "part": full["output"][0]["content"][0]}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                       "item": full["output"][0]}),
        ("response.completed", {"type": "response.completed", "response": full}),
    ]
    for _, data in ev:
        data["sequence_number"] = next(seq)
    return ev
