"""USD cost of a request for budgets: gateway.costs.prices's table, with a small fallback for unpriced models.

Usage dicts come in OpenAI shape (prompt_tokens / completion_tokens) or Anthropic shape
(input_tokens / output_tokens plus cache reads and writes); `split_usage` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.costs import prices as pricing
from gateway.governance.settings import Price

# USD per million tokens (input, output) for a model neither `governance.prices` nor the gateway's
# price table knows, so that a budget still means something for it.
UNPRICED = (1.00, 3.00)


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
    """Budget prices: `governance.prices` first (exact name, then the longest prefix), else the
    gateway's one price table (`pricing:`, shared with the ledger), else UNPRICED."""

    def __init__(self, overrides: Mapping[str, Price], table: pricing.PriceTable | None = None) -> None:
        self._overrides = {m: (p.input_per_mtok / 1e6, p.output_per_mtok / 1e6) for m, p in overrides.items()}
        self._table = table or pricing.PriceTable()

    def _override(self, model: str) -> tuple[float, float] | None:
        found = self._overrides.get(model)
        if found is None:
            prefixes = [m for m in self._overrides if model.startswith(m)]
            found = self._overrides[max(prefixes, key=len)] if prefixes else None
        return found

    def cost(self, model: str, tokens_in: int, tokens_out: int, usage: Mapping[str, Any] | None = None) -> float:
        """USD for these tokens; with the provider's own `usage`, cache reads and writes are priced too."""
        per_token = self._override(model)
        if per_token is None:
            usage = usage or {"prompt_tokens": tokens_in, "completion_tokens": tokens_out}
            priced = pricing.cost_usd(model, usage, self._table)
            if priced is not None:
                return priced
            per_token = (UNPRICED[0] / 1e6, UNPRICED[1] / 1e6)
        return tokens_in * per_token[0] + tokens_out * per_token[1]
