"""Prompt compression (cost layer 2): phrase rewriting and dedup of request bodies, by level.

The request pipeline calls the body function of its endpoint on a cache miss, with the level from
`settings.resolve_level`:

    result = compress_anthropic_messages(body, "standard", embed=embedder)  # or compress_openai_chat
    if result.changed:
        body = result.body  # re-encode; the input dict is never mutated

Modules: `table` (the phrase table), `phrases` (native engine or its twin), `protect` (spans never
touched), `dedup` (repeated paragraphs), `tokens` (offline token counts), `settings` (levels),
`messages` (the body walkers behind this API).
"""

from gateway.transform.compress.messages import (
    CompressionResult,
    compress_anthropic_messages,
    compress_openai_chat,
    compress_openai_completion,
    compress_openai_responses,
    compress_text,
)
from gateway.transform.compress.phrases import IMPLEMENTATION
from gateway.transform.compress.settings import resolve_level

__all__ = [
    "IMPLEMENTATION",
    "CompressionResult",
    "compress_anthropic_messages",
    "compress_openai_chat",
    "compress_openai_completion",
    "compress_openai_responses",
    "compress_text",
    "resolve_level",
]
