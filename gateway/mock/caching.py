"""The mock's provider prompt caches: Anthropic breakpoints and OpenAI automatic prefix caching.

Both are keyed on the exact bytes of the prompt prefix (per model), the way the providers bill:
- Anthropic (`anthropic`): only prefixes ending at a `cache_control` breakpoint are written, and only
  when they hold at least the model's minimum cacheable length. A request reads the longest stored
  prefix found at one of its breakpoints or up to `LOOKBACK` blocks before one; what lies between
  that and its last breakpoint is written (billed as cache creation), the rest is plain input.
  The markers themselves and the str-versus-text-block spelling of a content are not part of the
  key (the provider tokenises both the same), so a breakpoint moving forward keeps the prefix warm.
- Bedrock Converse (`anthropic` on `bedrock_as_anthropic(body)`): a `cachePoint` block is a
  breakpoint on the block before it, with Anthropic's rules (Claude on Bedrock caches the same way).
- OpenAI (`openai`): any prompt of at least 1,024 tokens is cached in 128-token steps; a request
  reads the longest stored step of its prefix and stores all of its own.
Entries live `TTL_S` from their last use (or an hour for `"ttl": "1h"` markers). Tokens are
estimated as bytes / 4 of the canonical JSON, like the rest of the mock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec
import xxhash

from gateway.transform.promptcache import min_tokens

LOOKBACK = 20  # blocks Anthropic looks back from a breakpoint for an earlier cache entry
TTL_S = 300.0
LONG_TTL_S = 3600.0
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP_TOKENS = 128
BYTES_PER_TOKEN = 4

_enc = msgspec.json.Encoder()


def _plain(block: Any) -> Any:
    """A block as the cache key sees it: no marker, str contents spelled as one text block."""
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if not isinstance(block, dict):
        return block
    out = {k: v for k, v in block.items() if k != "cache_control"}
    inner = out.get("content")
    if isinstance(inner, list):
        out["content"] = [_plain(b) for b in inner]
    elif isinstance(inner, str) and out.get("type") == "tool_result":
        out["content"] = [{"type": "text", "text": inner}] if inner else []
    return out


def _ttl(block: Any) -> float | None:
    """The block's marker TTL, or None when it is not a breakpoint (markers inside tool results count)."""
    if not isinstance(block, dict):
        return None
    mark = block.get("cache_control")
    inner = block.get("content")
    if not mark and isinstance(inner, list):
        mark = next((b.get("cache_control") for b in inner if isinstance(b, dict) and b.get("cache_control")), None)
    if not mark:
        return None
    return LONG_TTL_S if isinstance(mark, dict) and mark.get("ttl") == "1h" else TTL_S


def anthropic_blocks(body: dict[str, Any]) -> Iterator[tuple[bytes, float | None]]:
    """(canonical bytes, breakpoint TTL or None) of every block in prompt order: tools, system, messages."""
    for tool in body.get("tools") or []:
        yield _enc.encode(["tool", _plain(tool)]), _ttl(tool)
    system = body.get("system")
    for block in [system] if isinstance(system, str) and system else system if isinstance(system, list) else []:
        yield _enc.encode(["system", _plain(block)]), _ttl(block)
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        blocks = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        for block in blocks:
            yield _enc.encode([msg.get("role"), _plain(block)]), _ttl(block)


def has_cache_points(body: dict[str, Any]) -> bool:
    lists = [(body.get("toolConfig") or {}).get("tools"), body.get("system"),
             *((m.get("content") if isinstance(m, dict) else None) for m in body.get("messages") or [])]
    return any(isinstance(b, dict) and "cachePoint" in b for blocks in lists if isinstance(blocks, list)
               for b in blocks)


def bedrock_as_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Converse body in the shape `PromptCaches.anthropic` reads: each cachePoint becomes a
    cache_control marker on the block before it (and is no block itself)."""
    def marked(blocks: Any) -> list[Any]:
        out: list[Any] = []
        for block in blocks if isinstance(blocks, list) else []:
            if isinstance(block, dict) and "cachePoint" in block:
                if out and isinstance(out[-1], dict):
                    out[-1] = {**out[-1], "cache_control": {"type": "ephemeral"}}
            else:
                out.append(block)
        return out

    return {"model": model, "tools": marked((body.get("toolConfig") or {}).get("tools")),
            "system": marked(body.get("system")),
            "messages": [{"role": m.get("role"), "content": marked(m.get("content"))}
                         for m in body.get("messages") or [] if isinstance(m, dict)]}


class PromptCaches:
    """Per-process cache state of the mock provider."""

    def __init__(self) -> None:
        self._entries: dict[int, float] = {}  # prefix hash -> expiry (monotonic)

    def _live(self, key: int, now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry < now:
            del self._entries[key]
            return False
        return True

    def anthropic(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(cache_creation_input_tokens, cache_read_input_tokens, total prompt tokens) for `body`."""
        now = time.monotonic()
        hasher = xxhash.xxh3_64(str(body.get("model")).encode())
        prefixes: list[tuple[int, int]] = []  # (hash, tokens) after each block
        breakpoints: list[tuple[int, float]] = []  # (block index, ttl)
        size = 0
        for i, (raw, ttl) in enumerate(anthropic_blocks(body)):
            hasher.update(raw)
            size += len(raw)
            prefixes.append((hasher.intdigest(), size // BYTES_PER_TOKEN))
            if ttl is not None:
                breakpoints.append((i, ttl))
        total = max(1, size // BYTES_PER_TOKEN)
        if not breakpoints:
            return 0, 0, total
        floor = min_tokens(str(body.get("model") or ""))
        read = 0
        for b, _ in breakpoints:
            for j in range(b, max(-1, b - LOOKBACK - 1), -1):
                key, tokens = prefixes[j]
                if tokens > read and self._live(key, now):
                    self._entries[key] = max(self._entries[key], now + TTL_S)  # a read refreshes
                    read = tokens
                    break
        last = breakpoints[-1][0]
        last_tokens = prefixes[last][1]
        if last_tokens < floor:
            return 0, read, total  # too short to cache: processed normally
        for b, ttl in breakpoints:
            key, tokens = prefixes[b]
            if tokens >= floor:
                self._entries[key] = max(self._entries.get(key, 0.0), now + ttl)
        return max(0, last_tokens - read), read, total

    def openai(self, model: str, prompt: bytes) -> tuple[int, int]:
        """(cached tokens, total prompt tokens) for a prompt whose canonical bytes are `prompt`."""
        now = time.monotonic()
        total = max(1, len(prompt) // BYTES_PER_TOKEN)
        if total < OPENAI_MIN_TOKENS:
            return 0, total
        hasher = xxhash.xxh3_64(model.encode())
        step = OPENAI_STEP_TOKENS * BYTES_PER_TOKEN
        first = OPENAI_MIN_TOKENS * BYTES_PER_TOKEN
        hasher.update(prompt[:first])
        cached = 0
        end = first
        while end <= len(prompt):
            key = hasher.intdigest()
            if self._live(key, now):
                cached = end // BYTES_PER_TOKEN
            self._entries[key] = now + TTL_S
            hasher.update(prompt[end:end + step])
            end += step
        return cached, total


def openai_prompt(path: str, body: dict[str, Any]) -> bytes:
    """The canonical bytes of an OpenAI prompt in the order the model reads it: tools, then the text."""
    # `[tools, m1, m2, ...` is a byte prefix of the next turn's prompt: the closing bracket is dropped.
    if path.endswith("/responses"):
        items = body.get("input")
        items = items if isinstance(items, list) else [items or ""]
        return _enc.encode([body.get("tools") or [], body.get("instructions") or "", *items])[:-1]
    if path.endswith("/chat/completions"):
        return _enc.encode([body.get("tools") or [], *(body.get("messages") or [])])[:-1]
    return _enc.encode(body.get("prompt") or "")
