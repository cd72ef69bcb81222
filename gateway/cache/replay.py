"""Stored answers: replay one as SSE, assemble SSE into one, decide whether one may be stored.

A cache entry is always the non-streamed JSON body. A streamed hit replays it in the protocol's own
event sequence (OpenAI `chat.completion.chunk` / `text_completion` chunks ending in `[DONE]`;
Anthropic message_start ... message_stop), and a streamed miss is assembled back into that JSON body
as it passes so it can be written back. Pure functions: no I/O, tested by round trip.

Assemblers take what the SSE parser yields, `(event, data)` tuples with data as bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
PIECE = 24  # characters per replayed content delta: several chunks, like a real stream


def _pieces(text: str, size: int = PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + _enc.encode(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"

# ------------------------------------------------------------------------------------- OpenAI


ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def replay_openai(response: bytes | dict[str, Any], *, include_usage: bool = False) -> Iterator[bytes]:
    """SSE chunks for a stored chat.completion (or text_completion) body."""
    doc = _dec.decode(response) if isinstance(response, bytes) else response
    if doc.get("object") == "text_completion":
        yield from _replay_completion(doc, include_usage)
        return
    base = {
        "id": doc.get("id", ""),
        "object": "chat.completion.chunk",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
    }
    if doc.get("system_fingerprint") is not None:
        base["system_fingerprint"] = doc["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            **base,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return _sse(body)

    for choice in doc.get("choices", []):
        i, msg = choice.get("index", 0), choice.get("message") or {}
        yield chunk(i, {"role": msg.get("role", "assistant"), "content": "", "refusal": None})
        if msg.get("content"):
            for piece in _pieces(msg["content"]):
                yield chunk(i, {"content": piece})
        if msg.get("refusal"):
            yield chunk(i, {"refusal": msg["refusal"]})
        for n, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function", {})
            yield chunk(
                i,
                {
                    "tool_calls": [
                        {
                            "index": n,
                            "id": call.get("id"),
                            "type": call.get("type", "function"),
                            "function": {"name": fn.get("name"), "arguments": ""},
                        }
                    ]
                },
            )
            for piece in _pieces(fn.get("arguments", "")):
                if piece:
                    yield chunk(i, {"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
        yield chunk(i, {}, choice.get("finish_reason") or "stop")
    if include_usage:
        # An answer assembled from a stream that carried no usage has none to replay: a hit
        # costs no provider tokens, so report zeros rather than leave the client without a block.
        yield _sse({**base, "choices": [], "usage": doc.get("usage") or ZERO_USAGE})
    yield DONE


def _replay_completion(doc: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    base = {
        "id": doc.get("id", ""),
        "object": "text_completion",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
    }
    for choice in doc.get("choices", []):
        i = choice.get("index", 0)
        for piece in _pieces(choice.get("text", "")):
            yield _sse(
                {**base, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
            )
        yield _sse(
            {
                **base,
                "choices": [
                    {
                        "index": i,
                        "text": "",
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason") or "stop",
                    }
                ],
            }
        )
    if include_usage:
        # An answer assembled from a stream that carried no usage has none to replay: a hit
        # costs no provider tokens, so report zeros rather than leave the client without a block.
        yield _sse({**base, "choices": [], "usage": doc.get("usage") or ZERO_USAGE})
    yield DONE


def assemble_openai_stream(chunks: Iterable[tuple[str | None, bytes]]) -> dict[str, Any]:
    """The non-streamed body equivalent to a chat.completion.chunk (or text_completion) stream."""
    doc: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    text_mode = False
    for _, data in chunks:
        if not data or data.strip() == b"[DONE]":
            continue
        c = _dec.decode(data)
        for name in ("id", "created", "model", "system_fingerprint"):
            if c.get(name) is not None:
                doc.setdefault(name, c[name])
        if c.get("usage"):
            doc["usage"] = c["usage"]
        text_mode = text_mode or c.get("object") == "text_completion"
        for ch in c.get("choices") or []:
            acc = choices.setdefault(
                ch.get("index", 0),
                {
                    "role": "assistant",
                    "content": None,
                    "calls": {},
                    "refusal": None,
                    "text": "",
                    "finish": None,
                },
            )
            if ch.get("finish_reason"):
                acc["finish"] = ch["finish_reason"]
            if text_mode:
                acc["text"] += ch.get("text") or ""
                continue
            delta = ch.get("delta") or {}
            acc["role"] = delta.get("role") or acc["role"]
            for field in ("content", "refusal"):
                if delta.get(field):
                    acc[field] = (acc[field] or "") + delta[field]
            for tc in delta.get("tool_calls") or []:
                call = acc["calls"].setdefault(
                    tc.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
                )
                call["id"] = tc.get("id") or call["id"]
                call["type"] = tc.get("type") or call["type"]
                fn = tc.get("function") or {}
                call["function"]["name"] = fn.get("name") or call["function"]["name"]
                call["function"]["arguments"] += fn.get("arguments") or ""
    out_choices = []
    for index in sorted(choices):
        acc = choices[index]
        if text_mode:
            out_choices.append(
                {"index": index, "text": acc["text"], "logprobs": None, "finish_reason": acc["finish"]}
            )
            continue
        msg: dict[str, Any] = {"role": acc["role"], "content": acc["content"], "refusal": acc["refusal"]}
        if acc["calls"]:
            msg["tool_calls"] = [acc["calls"][n] for n in sorted(acc["calls"])]
        out_choices.append({"index": index, "message": msg, "logprobs": None, "finish_reason": acc["finish"]})
    result = {
        "id": doc.get("id", ""),
        "object": "text_completion" if text_mode else "chat.completion",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
        "choices": out_choices,
    }
    if doc.get("system_fingerprint") is not None:
        result["system_fingerprint"] = doc["system_fingerprint"]
    if doc.get("usage") is not None:
        result["usage"] = doc["usage"]
    return result


# ------------------------------------------------------------------------------------- Anthropic


def replay_anthropic(response: bytes | dict[str, Any]) -> Iterator[bytes]:
    """The Messages API event sequence for a stored message body."""
    doc = _dec.decode(response) if isinstance(response, bytes) else response
    usage = dict(doc.get("usage") or {})
    start_usage = {**usage, "output_tokens": min(1, usage.get("output_tokens", 0))}
    message = {**doc, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    yield _sse({"type": "message_start", "message": message}, "message_start")
    for i, block in enumerate(doc.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block.get("text", ""))]
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            args = _enc.encode(block.get("input") or {}).decode()
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(args)]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block.get("thinking", ""))]
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        else:  # redacted thinking and anything newer: sent whole in its start event
            opening, deltas = block, []
        yield _sse(
            {"type": "content_block_start", "index": i, "content_block": opening}, "content_block_start"
        )
        for d in deltas:
            yield _sse({"type": "content_block_delta", "index": i, "delta": d}, "content_block_delta")
        yield _sse({"type": "content_block_stop", "index": i}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": doc.get("stop_reason"), "stop_sequence": doc.get("stop_sequence")},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def assemble_anthropic_stream(events: Iterable[tuple[str | None, bytes]]) -> dict[str, Any]:
    """The message body equivalent to a Messages API event stream."""
    msg: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for _, data in events:
        if not data:
            continue
        e = _dec.decode(data)
        kind = e.get("type")
        if kind == "message_start":
            msg = dict(e["message"])
            msg["usage"] = dict(msg.get("usage") or {})
        elif kind == "content_block_start":
            blocks[e["index"]] = dict(e["content_block"])
        elif kind == "content_block_delta":
            block, d = blocks[e["index"]], e["delta"]
            if d["type"] == "text_delta":
                block["text"] = block.get("text", "") + d["text"]
            elif d["type"] == "input_json_delta":
                partial[e["index"]] = partial.get(e["index"], "") + d["partial_json"]
            elif d["type"] == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + d["thinking"]
            elif d["type"] == "signature_delta":
                block["signature"] = d["signature"]
        elif kind == "content_block_stop" and e["index"] in partial:
            raw = partial.pop(e["index"])
            blocks[e["index"]]["input"] = _dec.decode(raw) if raw else {}
        elif kind == "message_delta":
            msg.update({k: v for k, v in e.get("delta", {}).items()})
            msg.setdefault("usage", {}).update(e.get("usage") or {})
    msg["content"] = [blocks[i] for i in sorted(blocks)]
    return msg


# ------------------------------------------------------------------------------------- write-back

# Every token a repeat of the request would have cost: the prompt and the answer.
_COUNTED = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
)


def reusable_answer(response: bytes) -> int | None:
    """Tokens the answer saves on a repeat, or None when it must not be stored (error, truncated)."""
    try:
        doc = _dec.decode(response)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict) or "error" in doc or doc.get("type") == "error":
        return None
    if doc.get("object") == "list":  # embeddings: a vector per input
        data = doc.get("data")
        if not isinstance(data, list) or not data or any(not isinstance(d, dict) or "embedding" not in d
                                                         for d in data):
            return None
    elif doc.get("type") == "message":  # Anthropic
        if doc.get("stop_reason") in (None, "max_tokens", "refusal") or not doc.get("content"):
            return None
    else:
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        if any(
            not isinstance(c, dict) or c.get("finish_reason") in (None, "length", "content_filter")
            for c in choices
        ):
            return None
    usage = doc.get("usage")
    total = 0
    if isinstance(usage, dict):
        total = sum(v for name, v in usage.items() if name in _COUNTED and isinstance(v, int))
    return total or len(response) // 4
