"""Where the text lives in each request, answer and stream event shape (OpenAI and Anthropic).

Each function returns slots `(container, key, text)`: policies read `text`, and a redaction writes
`container[key] = new_text` in place, so every other field of the body stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

Slot = tuple[Any, Any, str]
_dec = msgspec.json.Decoder()


def _content(container: Any, key: Any, out: list[Slot]) -> None:
    """A `content` value: a string, or a list of parts/blocks carrying `text`."""
    value = container.get(key) if isinstance(container, dict) else None
    if isinstance(value, str):
        out.append((container, key, value))
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append((part, "text", part["text"]))


def _strings(container: dict[str, Any], key: str, out: list[Slot]) -> None:
    """A `prompt`/`input` value: a string or a list of strings (token arrays are skipped)."""
    value = container.get(key)
    if isinstance(value, str):
        out.append((container, key, value))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((value, i, item))


def input_texts(data: dict[str, Any], endpoint: str) -> list[Slot]:
    out: list[Slot] = []
    if endpoint in ("chat", "messages"):
        if endpoint == "messages":
            _content(data, "system", out)
        for msg in data.get("messages") or ():
            if isinstance(msg, dict):
                _content(msg, "content", out)
    elif endpoint == "completions":
        _strings(data, "prompt", out)
    elif endpoint == "embeddings":
        _strings(data, "input", out)
    elif endpoint == "responses":
        if isinstance(data.get("instructions"), str):
            out.append((data, "instructions", data["instructions"]))
        value = data.get("input")
        if isinstance(value, str):
            out.append((data, "input", value))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _content(item, "content", out)
    return out


def output_texts(data: Any) -> list[Slot]:
    """Texts of a whole (non-streamed) answer in any of the served shapes."""
    out: list[Slot] = []
    if not isinstance(data, dict):
        return out
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            if isinstance(choice.get("message"), dict):
                _content(choice["message"], "content", out)
            elif isinstance(choice.get("text"), str):
                out.append((choice, "text", choice["text"]))
    if isinstance(data.get("content"), list):  # Anthropic message
        _content(data, "content", out)
    for item in data.get("output") or ():  # Responses API
        if isinstance(item, dict):
            _content(item, "content", out)
    return out


def event_text(event: Any) -> tuple[Any, Any, str] | None:
    """The text delta carried by one stream event, or None (role, tool call, usage, stop...)."""
    if not isinstance(event, dict):
        return None
    choices = event.get("choices")
    if isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return delta, "content", delta["content"]
        if isinstance(choice.get("text"), str):
            return choice, "text", choice["text"]
        return None
    kind = event.get("type")
    if kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("text"), str):
            return delta, "text", delta["text"]
    elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
        return event, "delta", event["delta"]
    return None


def stream_text(events: Iterable[tuple[str | None, bytes]]) -> str:
    """The answer's text from collected SSE events (for usage estimates when a stream reports none)."""
    parts = []
    for _, data in events:
        try:
            slot = event_text(_dec.decode(data))
        except msgspec.DecodeError:
            continue
        if slot is not None:
            parts.append(slot[2])
    return "".join(parts)
