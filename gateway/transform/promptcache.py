"""Provider-side prompt caching (cost layer 3): `cache_control` markers.

Markers (Anthropic only; OpenAI caches prompts over 1,024 tokens by itself):
- system content of at least `LARGE_CHARS` characters is marked on every request ("large");
- system content of at least `REPEAT_CHARS` is marked once the same content was seen `REPEAT_SEEN`
  times within `REPEAT_TTL_S` ("repeat"), counted by hash in the shared store by the caller.
The marker goes on the last system block, so the cached prefix is tools + system. A request never
gets more than `MAX_BREAKPOINTS` markers in all (Anthropic rejects a fifth), and markers the client
set are never moved or duplicated: a system prompt the client marked itself is left alone.

Pure functions, no I/O. (Cached-token parsing lives in gateway.protocol.usage.)
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

LARGE_CHARS = 4000
REPEAT_CHARS = 2000
REPEAT_SEEN = 3
REPEAT_TTL_S = 15 * 60.0
MAX_BREAKPOINTS = 4
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
SEEN_PREFIX = "gw:pc:"

Rule = Literal["large", "repeat"]


# ----------------------------------------------------------------------------------- markers


def system_text(body: dict[str, Any]) -> str:
    """The system prompt of an Anthropic /v1/messages body as one string ("" when there is none)."""
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text")
    return ""


def chat_system_text(body: dict[str, Any]) -> str:
    """The system prompt an OpenAI chat body becomes once translated to Anthropic.

    Mirrors providers.translate.chat_to_anthropic: system and developer turns joined by a blank line.
    """
    parts: list[str] = []
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") in ("system", "developer"):
            content = msg.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.append("".join(p.get("text", "") for p in content
                                     if isinstance(p, dict) and p.get("type") == "text"))
    return "\n\n".join(parts)


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and bool(block.get("cache_control"))


def count_breakpoints(body: dict[str, Any]) -> int:
    """Markers already in the request: tools, system blocks, message blocks (and tool_result contents).

    Only the places Anthropic reads are counted, so a tool schema property named "cache_control"
    is not mistaken for one.
    """
    n = sum(1 for t in body.get("tools") or [] if _marked(t))
    system = body.get("system")
    if isinstance(system, list):
        n += sum(1 for b in system if _marked(b))
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            n += _marked(block)
            inner = block.get("content") if isinstance(block, dict) else None
            if isinstance(inner, list):
                n += sum(1 for b in inner if _marked(b))
    return n


def system_is_marked(body: dict[str, Any]) -> bool:
    system = body.get("system")
    return isinstance(system, list) and any(_marked(b) for b in system)


def eligible(body: dict[str, Any]) -> bool:
    """A marker could be added: there is room under the limit and the client did not mark the system."""
    return not system_is_marked(body) and count_breakpoints(body) < MAX_BREAKPOINTS


def decide(chars: int, seen: int) -> Rule | None:
    """Which rule marks system content of `chars` characters seen `seen` times (this one included)."""
    if chars >= LARGE_CHARS:
        return "large"
    if chars >= REPEAT_CHARS and seen >= REPEAT_SEEN:
        return "repeat"
    return None


def needs_count(chars: int) -> bool:
    """Only medium-sized system content needs its sightings counted in the store."""
    return REPEAT_CHARS <= chars < LARGE_CHARS


def system_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seen_key(model: str, digest: str) -> str:
    # Per upstream model: a provider's prompt cache is per model, so sightings are too.
    return f"{SEEN_PREFIX}{model}:{digest}"


def mark_system(body: dict[str, Any]) -> dict[str, Any] | None:
    """`body` with `cache_control` on its last system text block, copied; None when it can't be marked.

    The client's dict is not mutated: only the body and the system list are new.
    """
    if not eligible(body):
        return None
    system = body.get("system")
    if isinstance(system, str):
        if not system:
            return None
        blocks: list[Any] = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
    elif isinstance(system, list):
        last = next((i for i in range(len(system) - 1, -1, -1)
                     if isinstance(system[i], dict) and system[i].get("type") == "text"), None)
        if last is None:
            return None
        blocks = list(system)
        blocks[last] = {**system[last], "cache_control": dict(EPHEMERAL)}
    else:
        return None
    return {**body, "system": blocks}
