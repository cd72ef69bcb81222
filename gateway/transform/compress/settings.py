"""Compression levels: what each level turns on, the default per provider, and their resolution.

Resolved per request from values read at start-up (route configuration, provider family) plus the
request's own opt-out; nothing here parses configuration.
"""

from __future__ import annotations

import msgspec

from gateway.transform.compress.table import LEVELS

__all__ = [
    "DEFAULT_LEVELS",
    "FALLBACK_LEVEL",
    "LEVELS",
    "LevelSpec",
    "check_level",
    "default_level",
    "resolve_level",
    "spec_for",
]

# Anthropic models tolerate tighter rewriting than GPT-3.5-class models (seed, Layer 2), so the
# OpenAI family and anything unknown get the safest rewrites by default.
DEFAULT_LEVELS: dict[str, str] = {"anthropic": "standard", "openai": "light"}
FALLBACK_LEVEL = "light"


class LevelSpec(msgspec.Struct, frozen=True):
    """What a level does. `phrases` is the phrase-table level, or None for no rewriting."""

    phrases: str | None
    dedup_exact: bool
    dedup_near: bool  # needs an embedder too; near copies lose their small differences
    dedup_min_chars: int = 400
    near_threshold: float = 0.95
    compact: bool = False  # lossless compaction (compact.py): JSON, prose whitespace, repeated outputs


_SPECS: dict[str, LevelSpec] = {
    "off": LevelSpec(phrases=None, dedup_exact=False, dedup_near=False),
    "light": LevelSpec(phrases="light", dedup_exact=True, dedup_near=False, compact=True),
    "standard": LevelSpec(phrases="standard", dedup_exact=True, dedup_near=True, compact=True),
}


def check_level(level: str) -> str:
    """`level` itself if it is one of LEVELS, else ValueError naming the choices."""
    if level not in _SPECS:
        raise ValueError(f"unknown compression level {level!r}; expected one of {', '.join(LEVELS)}")
    return level


def spec_for(level: str) -> LevelSpec:
    return _SPECS[check_level(level)]


def default_level(provider: str) -> str:
    """The level for a provider family when the route sets none."""
    return DEFAULT_LEVELS.get(provider, FALLBACK_LEVEL)


def resolve_level(provider: str, route_level: str | None, request_opt_out: bool) -> str:
    """The level for one request: its opt-out wins, then the route's level, then the default."""
    if request_opt_out:
        return "off"
    if route_level is not None:
        return check_level(route_level)
    return default_level(provider)
