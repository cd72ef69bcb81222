"""USD cost of a request for budgets: gateway.pricing's table, with a small fallback for unpriced models.

Usage dicts come in OpenAI shape (prompt_tokens / completion_tokens) or Anthropic shape
(input_tokens / output_tokens plus cache reads and writes); `split_usage` reads both.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from .settings import Price

# USD per million tokens (input, output). Used when gateway.pricing is absent or does not price a
# model; the "*" row prices models nobody knows, so a budget still means something for them.
# `governance.prices` replaces both for the models it names (and switches gateway.pricing off).
FALLBACK: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "*": (1.00, 3.00),
}


def split_usage(usage: Mapping[str, Any] | None) -> tuple[int, int]:
    """(input tokens, output tokens) from an OpenAI or Anthropic usage dict."""
    if not usage:
        return 0, 0
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    tokens_in = int(usage.get("input_tokens") or 0)
    tokens_in += int(usage.get("cache_creation_input_tokens") or 0) + int(usage.get("cache_read_input_tokens") or 0)
    return tokens_in, int(usage.get("output_tokens") or 0)


class PriceTable:
    """Per-model prices resolved once per model name (exact, then the longest known prefix)."""

    def __init__(self, overrides: Mapping[str, Price]) -> None:
        self._table = dict(FALLBACK)
        self._table.update({m: (p.input_per_mtok, p.output_per_mtok) for m, p in overrides.items()})
        self._external = _external_pricer() if not overrides else None
        self._resolved: dict[str, tuple[float, float]] = {}

    def per_token(self, model: str) -> tuple[float, float]:
        found = self._resolved.get(model)
        if found is None:
            found = self._table.get(model)
            if found is None:
                prefixes = [m for m in self._table if m != "*" and model.startswith(m)]
                found = self._table[max(prefixes, key=len)] if prefixes else self._table["*"]
            found = (found[0] / 1e6, found[1] / 1e6)
            if len(self._resolved) < 4096:
                self._resolved[model] = found
        return found

    def cost(self, model: str, tokens_in: int, tokens_out: int, usage: Mapping[str, Any] | None = None) -> float:
        """USD for these tokens; with the provider's own `usage`, cache reads and writes are priced too."""
        if self._external is not None:
            external = self._external(model, usage or {"prompt_tokens": tokens_in, "completion_tokens": tokens_out})
            if external is not None:
                return float(external)
        p_in, p_out = self.per_token(model)
        return tokens_in * p_in + tokens_out * p_out


def _external_pricer() -> Callable[[str, Mapping[str, Any]], float | None] | None:
    """gateway.pricing.cost_usd(model, usage) -> float | None, once that module exists."""
    try:
        module = importlib.import_module("gateway.pricing")
    except ModuleNotFoundError:
        return None
    fn = getattr(module, "cost_usd", None)
    return fn if callable(fn) else None
