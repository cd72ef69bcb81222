"""One `Usage` for every wire shape: what an answer's tokens are, by how they are billed.

Every part that needs token counts (limits, the ledger, the audit log, metrics, the cache's savings)
reads this one struct, parsed once from whatever the provider sent.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct, frozen=True):
    """One answer's tokens by how they are billed. `input` excludes cache reads and writes."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0  # 5-minute writes (Anthropic's default TTL)
    cache_write_1h: int = 0
    output: int = 0

    @property
    def prompt(self) -> int:
        """Every input token, however billed (what a token limit counts)."""
        return self.input + self.cache_read + self.cache_write + self.cache_write_1h


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: dict[str, Any] | None) -> Usage | None:
    """Any usage object the gateway sees, by its own keys (no endpoint hint needed).

    - OpenAI chat/completions: prompt_tokens (cached included), prompt_tokens_details.cached_tokens;
    - OpenAI Responses: input_tokens (cached included), input_tokens_details.cached_tokens;
    - Anthropic: input_tokens (uncached only), cache_creation_input_tokens (split by TTL in
      cache_creation when given), cache_read_input_tokens;
    - Gemini usageMetadata: promptTokenCount (cached included) plus toolUsePromptTokenCount,
      cachedContentTokenCount, candidatesTokenCount plus thoughtsTokenCount (billed as output);
    - Bedrock Converse: inputTokens (uncached only, as Anthropic's), cacheReadInputTokens,
      cacheWriteInputTokens, outputTokens.
    """
    if not isinstance(usage, dict) or not usage:
        return None
    if "promptTokenCount" in usage or "candidatesTokenCount" in usage:
        prompt = _int(usage.get("promptTokenCount")) + _int(usage.get("toolUsePromptTokenCount"))
        cached = min(_int(usage.get("cachedContentTokenCount")), prompt)
        return Usage(input=prompt - cached, cache_read=cached,
                     output=_int(usage.get("candidatesTokenCount")) + _int(usage.get("thoughtsTokenCount")))
    if "inputTokens" in usage or "outputTokens" in usage:
        return Usage(input=_int(usage.get("inputTokens")), cache_read=_int(usage.get("cacheReadInputTokens")),
                     cache_write=_int(usage.get("cacheWriteInputTokens")), output=_int(usage.get("outputTokens")))
    if "prompt_tokens" in usage:
        details = usage.get("prompt_tokens_details") or {}
        cached = min(_int(details.get("cached_tokens")), _int(usage["prompt_tokens"]))
        return Usage(input=_int(usage["prompt_tokens"]) - cached, cache_read=cached,
                          output=_int(usage.get("completion_tokens")))
    if "input_tokens_details" in usage or "total_tokens" in usage:
        details = usage.get("input_tokens_details") or {}
        cached = min(_int(details.get("cached_tokens")), _int(usage.get("input_tokens")))
        return Usage(input=_int(usage.get("input_tokens")) - cached, cache_read=cached,
                          output=_int(usage.get("output_tokens")))
    if "input_tokens" in usage or "output_tokens" in usage:
        write = _int(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation")
        write_1h = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
        write_1h = min(write_1h, write)
        return Usage(input=_int(usage.get("input_tokens")),
                          cache_read=_int(usage.get("cache_read_input_tokens")),
                          cache_write=write - write_1h, cache_write_1h=write_1h,
                          output=_int(usage.get("output_tokens")))
    return None


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None


_usage_dec = msgspec.json.Decoder(_UsageOnly)


def usage_of_body(body: bytes | None) -> Usage | None:
    """The usage in a plain JSON answer (a chat completion, a response, an Anthropic message)."""
    if not body:
        return None
    try:
        return parse_usage(_usage_dec.decode(body).usage)
    except msgspec.DecodeError:
        return None
