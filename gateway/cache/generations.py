"""Cache generations: how `cache clear` reaches every worker and pod at once without a scan.

A clear does not hunt for keys (a request's store keys carry only its partition digest, which says
nothing of its model or key). It gives a *scope* a new random token in one small map in the store:

    gw:cache-gen   (a Redis hash / a table row per field)   scope -> msgspec JSON {"token", "at"}
        "*"                  every entry
        "model:<name>"       requests naming that model (the clear expands a route to its aliases)
        "key:<key id>"       the key's own partitions (scope: key; shared partitions belong to no key)
        "key:<id>|model:<M>" both at once

Each worker reads the map once a second in a background task, never on the request path, and
`salt()` mixes the tokens that apply to a request into its partition digest (cache/keys.py): every
entry of a cleared scope becomes unreachable at once in all four phases (entries, intent pointers,
recent intents and vectors all hang off the partition), and ages out by TTL or LRU. One field per
scope, written with one atomic HSET: two concurrent clears never lose each other (of the same scope,
either new token makes the old entries unreachable). The map lives outside `gw:c:` so clearing that
prefix keeps it, and tokens are random (not counters) so a lost map never resurrects a generation
between two clears.

Until a worker has read the map once, its salt is a random per-process token: a worker that starts
while the store is down cannot serve an entry a clear it has not seen was meant to hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import msgspec
import structlog

from gateway.store import Store, StoreUnavailable
from gateway.worker.lifecycle import stop_task

log = structlog.get_logger("gateway.cache")

GEN_KEY = "gw:cache-gen"
ALL = "*"
REFRESH_S = 1.0
MEMO_MAX = 8192


class Generation(msgspec.Struct):
    token: str
    at: float  # wall clock of the clear


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Generation)


def scope_of(model: str | None = None, key: str | None = None) -> str:
    if model is not None and key is not None:
        return f"key:{key}|model:{model}"
    if model is not None:
        return f"model:{model}"
    if key is not None:
        return f"key:{key}"
    return ALL


class Generations:
    def __init__(self, store: Store, refresh_s: float = REFRESH_S) -> None:
        self._store = store
        self.refresh_s = refresh_s
        self.loaded = False
        self.scopes: dict[str, Generation] = {}
        # What salt() reads, rebuilt on every change; `_all` starts as an unknown generation.
        self._all = "?" + secrets.token_hex(8)
        self._models: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._pairs: dict[tuple[str, str], str] = {}
        self._scoped = False
        self._memo: dict[tuple[str, str], str] = {}  # (model, tenant) -> salt, emptied on every change
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ request path

    def salt(self, model: object, tenant: str) -> str:
        """The tokens that apply to a request: "" until the first clear, then a few dict lookups."""
        if not self._scoped:
            return self._all
        m = model if isinstance(model, str) else ""  # a client may send anything: keep it hashable
        memo = self._memo
        salt = memo.get((m, tenant))
        if salt is None:
            salt = self._all + self._models.get(m, "") + self._keys.get(tenant, "") + self._pairs.get((tenant, m), "")
            if len(memo) < MEMO_MAX:  # names clients typed: bounded
                memo[(m, tenant)] = salt
        return salt

    # ------------------------------------------------------------------ background

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            with contextlib.suppress(StoreUnavailable):  # keep the last map; the breaker logs the outage
                await self.refresh()

    async def refresh(self) -> bool:
        """Read the map; True when it changed. Raises StoreUnavailable."""
        raw = await self._store.map_all(GEN_KEY)
        scopes: dict[str, Generation] = {}
        for scope, value in raw.items():
            try:
                scopes[scope] = _dec.decode(value)
            except msgspec.DecodeError:
                log.warning("cache_generation_unreadable", scope=scope)
        changed = not self.loaded or scopes != self.scopes
        if changed:
            self._apply(scopes)
        return changed

    def _apply(self, scopes: dict[str, Generation]) -> None:
        models: dict[str, str] = {}
        keys: dict[str, str] = {}
        pairs: dict[tuple[str, str], str] = {}
        for scope, gen in scopes.items():
            kind, _, rest = scope.partition(":")
            if scope == ALL:
                continue
            # A letter per kind: the concatenated salt then says which token stood where.
            if kind == "model":
                models[rest] = "m" + gen.token
            elif kind == "key" and "|model:" in rest:
                key, _, model = rest.partition("|model:")
                pairs[(key, model)] = "p" + gen.token
            elif kind == "key":
                keys[rest] = "k" + gen.token
        self.scopes = scopes
        self._all = "a" + scopes[ALL].token if ALL in scopes else ""
        self._models, self._keys, self._pairs = models, keys, pairs
        self._scoped = bool(models or keys or pairs)
        self._memo = {}
        self.loaded = True

    def assume_none(self) -> None:
        """No map read yet, and none to wait for: salts as if nothing was ever cleared."""
        self._apply({})

    # ------------------------------------------------------------------ clearing

    async def bump(self, scopes: list[str]) -> Generation:
        """Give each scope a new token in the store, and apply them here at once (the other workers
        and pods within `refresh_s`). Raises StoreUnavailable."""
        gen = Generation(token=secrets.token_hex(8), at=time.time())
        for scope in scopes:
            await self._store.map_set(GEN_KEY, scope, _enc.encode(gen))
        await self.refresh()
        return gen
