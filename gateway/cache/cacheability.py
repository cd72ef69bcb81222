"""Which answers the cache may reuse: deterministic ones (temperature 0 unless configured
otherwise, one choice), on the endpoints it knows; embeddings always."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.cache.types import CacheRequest

ENDPOINTS = frozenset({"chat", "messages", "completions", "embeddings"})


def reusable(req: CacheRequest, only_temperature_zero: bool) -> bool:
    body = req.body
    if req.endpoint not in ENDPOINTS or not isinstance(body, dict):
        return False
    if req.endpoint == "embeddings":
        return True  # deterministic: the same input, model and dimensions give the same vectors
    if _num(body.get("n", 1)) > 1 or _num(body.get("best_of", 1)) > 1:
        return False
    # A missing temperature is the provider's default, 1.0: sampled, so not repeatable.
    return not only_temperature_zero or _num(body.get("temperature", 1.0)) == 0


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0
