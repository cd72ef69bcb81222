"""Lossless compaction: compact JSON in tool results and arguments, prose whitespace, repeated outputs.

Three rewrites that keep every fact the model reads:
- a tool result or function-call argument string that is pretty-printed (or just spaced) JSON is
  re-serialised compactly, only when it parses, has no duplicate keys, no NaN/Infinity, and the
  compact text parses back to an equal value;
- in prose (between protected spans, see protect.py), trailing spaces and tabs before a newline go,
  runs of spaces inside a line become one, and three or more newlines become two (indentation is kept);
- a tool output identical to an earlier one in the same conversation becomes a short reference to
  the first (`[same output as the tool result in message 3]`);
- ANSI colour and style codes (SGR, `ESC[...m`) go from tool outputs that are not JSON: terminal
  display only, the words they colour stay (none occur in benchmarks/cost/corpus, so this saves 0
  there; coloured test-runner output is where they appear).

Each rewrite is a function of a text and of the texts before it, never of what comes after, so
re-sending a conversation with one more turn re-sends the earlier turns byte for byte. Tool
outputs that are not JSON (logs, file contents, diffs) are never reformatted: their whitespace can
carry meaning. `compact_body` walks a body; `compact_prose` is applied by messages.py to prose units.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.transform.compress.protect import compress_prose

__all__ = ["CompactStats", "compact_body", "compact_json", "compact_prose", "set_paths"]

REF_MIN_CHARS = 200  # shorter repeated outputs are cheaper to keep than to refer to
_TRAILING = re.compile(r"[ \t]+(?=\n)")
_INNER_RUN = re.compile(r"(?<=\S)(?: [ \t]+|\t[ \t]+)(?=\S)")
_BLANK_RUN = re.compile(r"\n{3,}")
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # Select Graphic Rendition only: cursor moves would change what is shown

Path = tuple[str | int, ...]


class CompactStats(msgspec.Struct):
    json_compacted: int = 0
    outputs_referenced: int = 0
    ansi_stripped: int = 0
    # (original, compacted) of every changed tool text, for counting tokens off the request path
    texts: list[tuple[str, str]] = []


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")  # compacting would drop one of them
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity do not round-trip to an equal value


def compact_json(text: str) -> str | None:
    """`text` re-serialised compactly if it is a JSON object or array and that is shorter, else None."""
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] not in "{[" or stripped[-1] not in "}]":
        return None
    try:
        value = json.loads(stripped, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    try:
        out = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        out.encode()  # a lone surrogate escape must stay escaped
    except UnicodeEncodeError:
        out = json.dumps(value, separators=(",", ":"))
    if len(out) >= len(text) or json.loads(out) != value:
        return None
    return out


def _whitespace(prose: str) -> tuple[str, int]:
    # The three patterns need one of these substrings to match; `in` runs at memchr speed, the
    # patterns (a lookbehind each position) at tens of ns per character, on every prose text.
    if "  " not in prose and "\t" not in prose and " \n" not in prose and "\n\n\n" not in prose:
        return prose, 0
    new = _BLANK_RUN.sub("\n\n", _INNER_RUN.sub(" ", _TRAILING.sub("", prose)))
    return (new, 1) if new != prose else (prose, 0)


def compact_prose(text: str) -> str:
    """`text` with its prose whitespace compacted; protected spans (code, quotes, URLs, JSON) untouched."""
    return compress_prose(text, _whitespace)[0]


def set_paths(body: dict[str, Any], changes: dict[Path, Any]) -> dict[str, Any]:
    """`body` with the value at each path replaced; only the containers on those paths are copied."""
    root = dict(body)
    copied: dict[Path, Any] = {(): root}
    for path, value in changes.items():
        node: Any = root
        for depth in range(len(path) - 1):
            sub = path[: depth + 1]
            child = copied.get(sub)
            if child is None:
                original = node[path[depth]]
                child = dict(original) if isinstance(original, dict) else list(original)
                node[path[depth]] = child
                copied[sub] = child
            node = child
        node[path[-1]] = value
    return root


# A tool text in a body: (path to the string, label of its message, whether it is a tool output).
_Slot = tuple[Path, str, bool]


def _text_slots(content: Any, base: Path) -> list[Path]:
    if isinstance(content, str):
        return [base]
    if isinstance(content, list):
        return [(*base, k, "text") for k, part in enumerate(content)
                if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
                and isinstance(part.get("text"), str)]
    return []


def _chat_slots(body: dict[str, Any]) -> list[_Slot]:
    slots: list[_Slot] = []
    messages = body.get("messages")
    for i, msg in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(msg, dict):
            continue
        label = f"message {i + 1}"
        if msg.get("role") in ("tool", "function"):
            slots += [(p, label, True) for p in _text_slots(msg.get("content"), ("messages", i, "content"))]
        for j, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                slots.append((("messages", i, "tool_calls", j, "function", "arguments"), label, False))
    return slots


def _anthropic_slots(body: dict[str, Any]) -> list[_Slot]:
    slots: list[_Slot] = []
    messages = body.get("messages")
    for i, msg in enumerate(messages if isinstance(messages, list) else []):
        content = msg.get("content") if isinstance(msg, dict) else None
        for k, block in enumerate(content if isinstance(content, list) else []):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                base: Path = ("messages", i, "content", k, "content")
                slots += [(p, f"message {i + 1}", True) for p in _text_slots(block.get("content"), base)]
    return slots


def _responses_slots(body: dict[str, Any]) -> list[_Slot]:
    slots: list[_Slot] = []
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        label = f"input item {i + 1}"
        if item.get("type") == "function_call_output" and isinstance(item.get("output"), str):
            slots.append((("input", i, "output"), label, True))
        elif item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
            slots.append((("input", i, "arguments"), label, False))
    return slots


SLOTS: dict[str, Callable[[dict[str, Any]], list[_Slot]]] = {
    "chat": _chat_slots, "messages": _anthropic_slots, "responses": _responses_slots,
}


def _get(body: Any, path: Path) -> Any:
    for key in path:
        body = body[key]
    return body


def compact_body(body: dict[str, Any], kind: str, refs: bool = True) -> tuple[dict[str, Any], CompactStats]:
    """Compact the tool results and call arguments of a body of `kind` ("chat", "messages", "responses").

    Returns the new body (the same object when nothing changed) and what was done.
    """
    stats = CompactStats()
    slots = SLOTS[kind](body) if kind in SLOTS else []
    changes: dict[Path, Any] = {}
    first: dict[str, str] = {}  # compacted output text -> label of the message that first had it
    for path, label, is_output in slots:
        original = _get(body, path)
        compacted = compact_json(original)
        text = original if compacted is None else compacted
        stripped = False
        if is_output and compacted is None and "\x1b[" in text:
            text = _SGR.sub("", text)
            stripped = text != original
        referenced = False
        if is_output and refs and len(text) >= REF_MIN_CHARS:
            seen = first.setdefault(text, label)
            if seen != label:  # (two copies in one message are both kept: nothing earlier to point at)
                text = f"[same output as the tool result in {seen}]"
                referenced = True
        if referenced:
            stats.outputs_referenced += 1
        elif compacted is not None:
            stats.json_compacted += 1
        elif stripped:
            stats.ansi_stripped += 1
        if text != original:
            changes[path] = text
            stats.texts.append((original, text))
    if not changes:
        return body, stats
    return set_paths(body, changes), stats
