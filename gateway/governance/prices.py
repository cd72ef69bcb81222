"""USD cost of a request for budgets: the one price table (gateway.costs.prices), with overrides
from `governance.prices` and a small fallback for unpriced models."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.costs import prices as pricing
from gateway.governance.settings import Price
from gateway.protocol.usage import Usage

# USD per million tokens (input, output) for a model neither `governance.prices` nor the gateway's
# price table knows, so that a budget still means something for it.
UNPRICED = (1.00, 3.00)


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

    def cost(self, model: str, tokens_in: int, tokens_out: int, usage: Usage | None = None) -> float:
        """USD for these tokens; with the provider's own `usage`, cache reads and writes are priced too."""
        per_token = self._override(model)
        if per_token is None:
            found = self._table.lookup(model)
            if found is not None:
                return pricing.price_tokens(usage or Usage(input=tokens_in, output=tokens_out), found[1])
            per_token = (UNPRICED[0] / 1e6, UNPRICED[1] / 1e6)
        return tokens_in * per_token[0] + tokens_out * per_token[1]
