"""The savings ledger: each request's cost and savings, and running totals per model and key.

Per request (`account`): what the provider bills for the answer's tokens, and what was saved
- by a gateway cache hit: the whole call that was not made (its stored usage, priced as a fresh
  call that reads the provider cache where the original did; the hit itself costs nothing);
- by compression (phrases, dedup) and by lossless compaction (JSON, whitespace, repeated tool
  outputs), each apart: the tokens removed, at the input price (counted with the model's tokenizer
  family, an estimate of the provider's own);
- by provider prompt caching: cache reads at the input-minus-cached price difference, minus what
  cache writes cost above the input price. A priming request saves a negative amount: honest.

Totals are kept per worker and added to the shared store as integer counters (USD in nano-dollars),
flushed in the background so the after-hook never waits on the store. A store that is down keeps
the deltas for the next flush; `/admin/savings` then shows this worker's own totals.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import msgspec
import structlog

from gateway.costs.prices import ModelPrice, price_tokens, provider_cache_saving_usd
from gateway.protocol.usage import Usage
from gateway.store import Store, StoreUnavailable

log = structlog.get_logger("gateway.costs.ledger")

COUNT_FIELDS = ("requests", "cache_hits", "input_tokens", "cached_tokens", "cache_write_tokens",
                "output_tokens", "compression_tokens_saved", "compaction_tokens_saved")
USD_FIELDS = ("cost_usd", "saved_cache_usd", "saved_compression_usd", "saved_provider_cache_usd",
              "saved_compaction_usd")
FIELDS = COUNT_FIELDS + USD_FIELDS
NANO = 1_000_000_000
PREFIX = "gw:ledger:"
INDEX_KEY = PREFIX + "index"
INDEX_CAP = 10_000  # distinct (model, key) pairs the shared totals can list
TOTALS_TTL_S = 10 * 365 * 86400.0  # counters live until cleared (a fixed window that never ends)


class RequestCost(msgspec.Struct):
    cost_usd: float = 0.0
    saved_cache_usd: float = 0.0
    saved_compression_usd: float = 0.0
    saved_provider_cache_usd: float = 0.0
    saved_compaction_usd: float = 0.0
    usage: Usage | None = None
    cache_hit: bool = False
    compression_tokens_saved: int = 0
    compaction_tokens_saved: int = 0
    price_model: str | None = None  # the table entry used; None = unpriced

    def summary(self) -> dict[str, Any]:
        """The figures as a dict (the CLI and the savings API show them)."""
        return {"cost_usd": self.cost_usd, "saved_cache_usd": self.saved_cache_usd,
                "saved_compression_usd": self.saved_compression_usd,
                "saved_provider_cache_usd": self.saved_provider_cache_usd,
                "saved_compaction_usd": self.saved_compaction_usd, "price_model": self.price_model}

    @property
    def saved_usd(self) -> float:
        """Every layer's saving together."""
        return (self.saved_cache_usd + self.saved_compression_usd + self.saved_compaction_usd
                + self.saved_provider_cache_usd)

    def counters(self) -> list[int]:
        u = self.usage or Usage()
        served = u if not self.cache_hit else Usage()  # a hit sent nothing to the provider
        return [1, int(self.cache_hit), served.input, served.cache_read,
                served.cache_write + served.cache_write_1h, served.output, self.compression_tokens_saved,
                self.compaction_tokens_saved,
                *(round(v * NANO) for v in (self.cost_usd, self.saved_cache_usd, self.saved_compression_usd,
                                            self.saved_provider_cache_usd, self.saved_compaction_usd))]


def account(usage: Usage | None, price: tuple[str, ModelPrice] | None, *, cache_hit: bool = False,
            hit_tokens: int = 0, compression_tokens_saved: int = 0, compaction_tokens_saved: int = 0
            ) -> RequestCost:
    """One request's figures. On a hit `usage` is the stored answer's; `hit_tokens` is the fallback
    when it has none (priced as input tokens: a lower bound)."""
    if price is None:
        return RequestCost(usage=usage, cache_hit=cache_hit, compression_tokens_saved=compression_tokens_saved,
                           compaction_tokens_saved=compaction_tokens_saved)
    name, p = price
    if cache_hit:
        u = usage or Usage(input=hit_tokens)
        # A repeat of the call would not write the provider cache again: writes count as input.
        fresh = Usage(input=u.input + u.cache_write + u.cache_write_1h, cache_read=u.cache_read,
                           output=u.output)
        return RequestCost(saved_cache_usd=price_tokens(fresh, p), usage=usage, cache_hit=True, price_model=name)
    u = usage or Usage()
    return RequestCost(
        cost_usd=price_tokens(u, p),
        saved_compression_usd=compression_tokens_saved * p.input * 1e-6,
        saved_compaction_usd=compaction_tokens_saved * p.input * 1e-6,
        saved_provider_cache_usd=provider_cache_saving_usd(u, p),
        usage=usage, compression_tokens_saved=compression_tokens_saved,
        compaction_tokens_saved=compaction_tokens_saved, price_model=name,
    )


@functools.lru_cache(maxsize=4096)  # a handful of (model, key) pairs per worker; quote() is ~3 us a call
def _member(model: str, key: str) -> str:
    return f"{quote(model, safe='')}|{quote(key, safe='')}"


def _counter_key(member: str, field: str) -> str:
    return f"{PREFIX}{member}:{field}"


def _add(into: dict[str, list[int]], member: str, values: list[int]) -> None:
    row = into.get(member)
    if row is None:
        into[member] = list(values)
    else:
        for i, v in enumerate(values):
            row[i] += v


def render(rows: dict[str, list[int]], scope: str) -> dict[str, Any]:
    """The /admin/savings document: grand totals, by model, by key, and every (model, key) row."""

    def as_dict(values: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(COUNT_FIELDS, values[: len(COUNT_FIELDS)], strict=True))
        for name, v in zip(USD_FIELDS, values[len(COUNT_FIELDS):], strict=True):
            out[name] = round(v / NANO, 9)
        return out

    total: dict[str, list[int]] = {}
    by_model: dict[str, list[int]] = {}
    by_key: dict[str, list[int]] = {}
    listed = []
    for member, values in sorted(rows.items()):
        model_q, _, key_q = member.partition("|")
        model, key = unquote(model_q), unquote(key_q)
        _add(total, "", values)
        _add(by_model, model, values)
        _add(by_key, key, values)
        listed.append({"model": model, "key": key, **as_dict(values)})
    return {
        "scope": scope,
        "totals": as_dict(total.get("", [0] * len(FIELDS))),
        "by_model": {m: as_dict(v) for m, v in by_model.items()},
        "by_key": {k: as_dict(v) for k, v in by_key.items()},
        "rows": listed,
    }


class Ledger:
    """Running totals of one worker, flushed as deltas to the shared store."""

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._store = store  # read per flush: the store may be installed or replaced after us
        self.local: dict[str, list[int]] = {}
        self._pending: dict[str, list[int]] = {}
        self._indexed: set[str] = set()
        self._lock = asyncio.Lock()

    def record(self, model: str, key: str, cost: RequestCost) -> None:
        member = _member(model, key)
        values = cost.counters()
        _add(self.local, member, values)
        _add(self._pending, member, values)

    async def flush(self) -> bool:
        """Add the pending deltas to the store; False (deltas kept) when it is unavailable."""
        store = self._store()
        if store is None:
            return False
        async with self._lock:
            pending, self._pending = self._pending, {}
            items = list(pending.items())
            for n, (member, values) in enumerate(items):
                try:
                    if member not in self._indexed:
                        await store.list_push(INDEX_KEY, member.encode(), INDEX_CAP, TOTALS_TTL_S)
                        self._indexed.add(member)
                    for i, field in enumerate(FIELDS):
                        if values[i]:
                            await store.incr_window(_counter_key(member, field), values[i], TOTALS_TTL_S)
                            values[i] = 0
                except StoreUnavailable:
                    for rest_member, rest in items[n:]:
                        _add(self._pending, rest_member, rest)  # what was added is zeroed already
                    return False
        return True

    async def totals(self) -> dict[str, Any]:
        """Every worker's totals from the store; this worker's own when the store is unavailable."""
        store = self._store()
        if store is not None and await self.flush():
            try:
                members = {m.decode() for m in await store.list_range(INDEX_KEY, INDEX_CAP)}
                rows: dict[str, list[int]] = {}
                for member in members:
                    # incr by 0 reads a counter atomically on both backends (and creates a missing one)
                    rows[member] = list(await asyncio.gather(*(
                        store.incr_window(_counter_key(member, f), 0, TOTALS_TTL_S) for f in FIELDS)))
                return render(rows, "shared")
            except StoreUnavailable:
                pass
        return render(self.local, "worker")

    async def run_flusher(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:  # never let the loop die: the next tick tries again
                log.exception("ledger_flush_failed")
