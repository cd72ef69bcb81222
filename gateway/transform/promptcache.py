"""Provider-side prompt caching (cost layer 3): `cache_control` markers and `prompt_cache_key`.

Anthropic caches only what a breakpoint marks. `mark_conversation` places them the way Anthropic
documents for conversations: the end of tools + system (the stable part), the end of the previous
turn (so this request reads what the last one wrote) and the end of the latest message (so the next
request can read this one): the last breakpoint moves forward each turn. A breakpoint is placed only
where the prefix up to it reaches the model's minimum cacheable length (`min_tokens`), a request
never gets more than `MAX_BREAKPOINTS` in all (Anthropic rejects a fifth), and markers the client set
are kept, counted and never duplicated. The marker itself is not part of the provider's cache key,
so moving it does not change the cached prefix (the mock keys on the bytes without markers too).

When system content is worth marking on its own (the older rules, used by the transform part):
- system content of at least `LARGE_CHARS` characters is marked on every request ("large");
- system content of at least `REPEAT_CHARS` is marked once the same content was seen `REPEAT_SEEN`
  times within `REPEAT_TTL_S` ("repeat"), counted by hash in the shared store by the caller.

OpenAI caches prompts over 1,024 tokens by itself: nothing is injected, but `prompt_cache_key`
gives requests of one tenant and conversation the same key, so the provider routes them to one cache.

Pure functions, no I/O. (Cached-token parsing lives in gateway.protocol.usage.)
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

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


def mark_system_only(body: dict[str, Any]) -> dict[str, Any] | None:
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


def mark_system(body: dict[str, Any]) -> dict[str, Any] | None:
    """What the system rules' call sites (transform part, chat translation) apply once a rule fired.

    The conversation's breakpoints (`mark_conversation`, for the body's own model) when any can be
    placed, else the system-only marker as before; None when neither can.
    """
    if not eligible(body):
        return None
    marks = mark_conversation(body, str(body.get("model") or ""))
    return marks.body if marks.placed else mark_system_only(body)


# ------------------------------------------------------------------------ conversation breakpoints

# Minimum cacheable prefix per model family, in tokens (Anthropic's prompt-caching page, table
# "Cache limitations", as of 2026; a shorter marked prefix is simply not cached). Matched in order
# on the upstream model name; anything else gets `DEFAULT_MIN_TOKENS`.
MIN_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096), ("claude-opus-4-5", 4096), ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048), ("claude-3-5-haiku", 2048), ("claude-3-haiku", 2048), ("haiku", 2048),
)
DEFAULT_MIN_TOKENS = 1024
CHARS_PER_TOKEN = 4  # the estimate used for placement; a breakpoint a little short is merely unused
# Blocks that cannot carry a marker (Anthropic: thinking blocks can't; empty text is rejected).
_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})
_enc = msgspec.json.Encoder()

Place = Literal["system", "tools", "previous", "latest"]


class Marks(msgspec.Struct):
    """What `mark_conversation` did: the new body and where it put each breakpoint."""

    body: dict[str, Any]
    placed: list[str]
    client: int  # markers the client had set (kept, and counted against the limit)


def min_tokens(model: str) -> int:
    name = model.lower()
    for prefix, tokens in MIN_TOKENS:
        if prefix in name:
            return tokens
    return DEFAULT_MIN_TOKENS


def _size(obj: Any) -> int:
    return len(_enc.encode(obj)) if not isinstance(obj, str) else len(obj) + 2


def _markable(block: Any) -> bool:
    if isinstance(block, str):
        return bool(block)
    if not isinstance(block, dict) or block.get("type") in _UNMARKABLE:
        return False
    return not (block.get("type") == "text" and not block.get("text"))


def _last_markable(content: Any) -> int | None:
    """Index of the last block of a message content that can carry a marker (-1: a str content)."""
    if isinstance(content, str):
        return -1 if content else None
    if isinstance(content, list):
        for k in range(len(content) - 1, -1, -1):
            if _markable(content[k]):
                return k
    return None


def _previous_turn(messages: list[Any]) -> int | None:
    """The message that ended the previous request: the user turn before the latest assistant turn."""
    i = len(messages) - 1
    while i >= 0 and isinstance(messages[i], dict) and messages[i].get("role") == "user":
        i -= 1
    while i >= 0 and isinstance(messages[i], dict) and messages[i].get("role") == "assistant":
        i -= 1
    return i if i >= 0 else None


def _marked_at(content: Any, k: int) -> bool:
    return k >= 0 and isinstance(content, list) and _marked(content[k])


def _with_marker(content: Any, k: int) -> list[Any]:
    if k < 0:
        return [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]
    blocks = list(content)
    blocks[k] = {**blocks[k], "cache_control": dict(EPHEMERAL)}
    return blocks


def mark_conversation(body: dict[str, Any], model: str, *, first_turn: bool = True) -> Marks:
    """`body` (Anthropic /v1/messages) with breakpoints for a growing conversation, copied.

    Breakpoints, by priority while room is left under `MAX_BREAKPOINTS`: the latest message, the
    message that ended the previous turn, the end of system (or of tools when there is no system).
    Each only where the prefix up to it holds at least `min_tokens(model)` tokens (estimated) and
    the client did not mark it already. The client's dict is never mutated.

    A cache write costs 1.25x input and pays off only if a later request reads it: with
    `first_turn=False` a body with a single message gets no message breakpoint (for traffic that is
    mostly one-shot); agent loops want the default, so that turn 2 reads what turn 1 wrote.
    """
    client = count_breakpoints(body)
    room = MAX_BREAKPOINTS - client
    floor = min_tokens(model) * CHARS_PER_TOKEN
    tools: list[Any] = body["tools"] if isinstance(body.get("tools"), list) else []
    system = body.get("system")
    head = sum(_size(t) for t in tools) + (_size(system) if system else 0)
    messages: list[Any] = body["messages"] if isinstance(body.get("messages"), list) else []
    ends: list[int] = []  # chars of the prefix up to the end of each message
    total = head
    for msg in messages:
        total += _size(msg.get("content") if isinstance(msg, dict) else msg) + 16
        ends.append(total)
    wanted: list[tuple[Place, int]] = []
    if messages and (first_turn or len(messages) > 1):
        wanted.append(("latest", len(messages) - 1))
        prev = _previous_turn(messages)
        if prev is not None and prev != len(messages) - 1:
            wanted.append(("previous", prev))
    wanted.append(("system" if system else "tools", -1))
    out = body
    new_messages: list[Any] | None = None
    placed: list[str] = []
    for place, i in wanted:
        if room <= 0:
            break
        if place in ("system", "tools"):
            if head < floor:
                continue
            if place == "system":
                if system_is_marked(out):
                    continue
                marked = mark_system_only(out) if count_breakpoints(out) < MAX_BREAKPOINTS else None
                if marked is None:
                    continue
                out = marked
            else:
                if not tools or any(_marked(t) for t in tools) or not isinstance(tools[-1], dict):
                    continue
                out = {**out, "tools": [*tools[:-1], {**tools[-1], "cache_control": dict(EPHEMERAL)}]}
        else:
            if ends[i] < floor or not isinstance(messages[i], dict):
                continue
            content = messages[i].get("content")
            k = _last_markable(content)
            if k is None or _marked_at(content, k):
                continue
            if new_messages is None:
                new_messages = list(messages)
            new_messages[i] = {**messages[i], "content": _with_marker(content, k)}
        placed.append(place)
        room -= 1
    if new_messages is not None:
        out = {**out, "messages": new_messages}
    return Marks(out if placed else body, placed, client)


def worth_marking(body: dict[str, Any], model: str) -> bool:
    """Whether a body is long enough for any breakpoint at all (the cheap check before marking)."""
    floor = min_tokens(model) * CHARS_PER_TOKEN
    return len(_enc.encode(body.get("messages") or [])) + _size(body.get("system") or "") \
        + _size(body.get("tools") or []) >= floor


# ------------------------------------------------------------------------------ OpenAI routing

CACHE_KEY_FIELD = "prompt_cache_key"
_KEY_HEAD_CHARS = 4096  # how much of the conversation's start identifies it


def prompt_cache_key(tenant: str, body: dict[str, Any]) -> str | None:
    """A `prompt_cache_key` for an OpenAI body the client did not key itself, else None.

    The key is a hash of the tenant and the conversation's opening (tools, instructions, the
    messages up to the first user turn, at most `_KEY_HEAD_CHARS` characters): the same for every turn of one
    conversation, so OpenAI routes them to the machine holding its cached prefix, and different
    across tenants, so one tenant's traffic does not crowd another's cache.
    """
    if body.get(CACHE_KEY_FIELD):
        return None
    opening = body.get("messages") if "messages" in body else body.get("input")
    head = _enc.encode([body.get("tools") or [], body.get("instructions") or "", _opening(opening)])
    digest = hashlib.sha256(tenant.encode() + b"\0" + head).hexdigest()
    return f"gw-{digest[:40]}"


def _opening(items: Any) -> str:
    """A conversation's opening: everything up to its first user turn (present in every later turn)."""
    if not isinstance(items, list):
        return str(items or "")[:_KEY_HEAD_CHARS]
    out: list[Any] = []
    for item in items:
        out.append(item)
        if isinstance(item, dict) and item.get("role") == "user":
            break
    return _enc.encode(out)[:_KEY_HEAD_CHARS].decode("utf-8", "ignore")
