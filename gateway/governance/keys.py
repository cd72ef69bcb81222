"""Virtual keys: issued by the gateway, shown once, stored hashed in the shared store, cached briefly.

Layout in the store (values are msgspec JSON of `VirtualKey`):
    gw:vk:d:<sha256 of the key>  -> the record, for lookups on the request path (one GET)
    gw:vk:i:<id>                 -> the record, for admin operations by id
    gw:vk:ids                    -> the list of every id ever issued (for listing)
Revoking deletes the digest entry; every worker's cache entry lives at most `ttl_s` (<= 1 s), so a
revoked key is refused everywhere within a second, and an update (limits, models, team) is seen
everywhere within the same second. A rotation may keep the old secret working for a grace period
(its digest entry then expires by itself; revoking ends it at once). During a store outage, cached
entries keep serving (stale) and unknown keys are refused with 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any

import msgspec

from gateway.errors import ServiceUnavailable
from gateway.governance.auth import KeyRecord
from gateway.governance.settings import Budget, Quota
from gateway.store import StoreUnavailable

PREFIX = "sk-gw-"  # every virtual key starts with this: other keys are never looked up in the store
_D, _I, _IDS = "gw:vk:d:", "gw:vk:i:", "gw:vk:ids"
_FOREVER_S = 10 * 365 * 86400.0
_MAX_CACHED = 50_000


class VirtualKey(msgspec.Struct, omit_defaults=True):
    id: str
    digest: str
    hint: str  # the first characters of the key, to recognise it in listings
    owner: str = ""
    team: str | None = None
    models: list[str] | None = None
    quota: Quota = msgspec.field(default_factory=Quota)
    name: str = ""
    created: float = 0.0
    rotated: float = 0.0
    updated: float = 0.0
    revoked: float = 0.0
    previous_digest: str = ""  # the secret before the last rotation, working until `previous_until`
    previous_until: float = 0.0

    def record(self) -> KeyRecord:
        models = frozenset(self.models) if self.models is not None else None
        return KeyRecord(id=self.id, team=self.team, models=models)


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(VirtualKey)


def digest_of(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, store: Any, ttl_s: float = 0.5) -> None:
        self.store = store
        self.ttl_s = ttl_s
        # digest -> (fresh until (monotonic), key or None when absent/revoked)
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}
        self._by_id: dict[str, VirtualKey] = {}
        self._inflight: dict[str, asyncio.Future[VirtualKey | None]] = {}  # one store read per digest

    # ------------------------------------------------------------------ request path

    def cached(self, raw_key: str) -> VirtualKey | None:
        """The key when a fresh cache entry exists (no I/O)."""
        entry = self._cache.get(digest_of(raw_key))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    async def resolve(self, raw_key: str) -> VirtualKey | None:
        if not raw_key.startswith(PREFIX):
            return None
        digest = digest_of(raw_key)
        now = time.monotonic()
        entry = self._cache.get(digest)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[VirtualKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            vk = await self._fetch(digest, now, entry)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here; waiters re-raise it
            raise
        else:
            fut.set_result(vk)
        finally:
            del self._inflight[digest]
        return vk

    async def _fetch(self, digest: str, now: float, entry: tuple[float, VirtualKey | None] | None
                     ) -> VirtualKey | None:
        try:
            raw = await self.store.get(_D + digest)
        except StoreUnavailable:
            if entry is not None:
                return entry[1]  # stale while the store is away
            raise ServiceUnavailable("The key store is unavailable; try again shortly.") from None
        vk = _dec.decode(raw) if raw is not None else None
        if vk is not None and vk.revoked:
            vk = None
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl_s, vk)
        if vk is not None:
            self._by_id[vk.id] = vk
        return vk

    async def lookup(self, raw_key: str) -> KeyRecord | None:
        vk = await self.resolve(raw_key)
        return vk.record() if vk is not None else None

    def by_id(self, key_id: str) -> VirtualKey | None:
        """A key resolved earlier by this worker (its quota, for limits)."""
        return self._by_id.get(key_id)

    # ------------------------------------------------------------------ admin

    async def create(self, *, owner: str = "", team: str | None = None, models: list[str] | None = None,
                     rpm: int | None = None, tpm: int | None = None, budget: Budget | None = None,
                     name: str = "") -> tuple[str, VirtualKey]:
        """A new key: the secret is returned here once and never stored."""
        secret = new_secret()
        now = time.time()
        vk = VirtualKey(id="vk_" + secrets.token_hex(6), digest=digest_of(secret), hint=secret[:10],
                        owner=owner, team=team, models=models, quota=Quota(rpm=rpm, tpm=tpm, budget=budget),
                        name=name, created=now)
        data = _enc.encode(vk)
        await self.store.set(_I + vk.id, data)
        await self.store.set(_D + vk.digest, data)
        await self.store.list_push(_IDS, vk.id.encode(), 1_000_000, _FOREVER_S)
        return secret, vk

    async def get(self, key_id: str) -> VirtualKey | None:
        raw = await self.store.get(_I + key_id)
        return _dec.decode(raw) if raw is not None else None

    async def list(self) -> list[VirtualKey]:
        ids = [i.decode() for i in await self.store.list_range(_IDS, 1_000_000)]
        raws = await self.store.get_many([_I + i for i in ids])
        keys = [_dec.decode(r) for r in raws if r is not None]
        return sorted(keys, key=lambda k: k.created)

    async def update(self, key_id: str, **changes: Any) -> VirtualKey | None:
        """Change owner, team, models, name, rpm, tpm or budget (None clears a limit); the secret and
        the spend stay. Every worker sees the change within `ttl_s`."""
        vk = await self.get(key_id)
        if vk is None or vk.revoked:
            return None
        quota = {f: changes.pop(f) for f in ("rpm", "tpm", "budget") if f in changes}
        vk = msgspec.structs.replace(vk, quota=msgspec.structs.replace(vk.quota, **quota), updated=time.time(),
                                     **changes)
        data = _enc.encode(vk)
        await self.store.set(_I + vk.id, data)
        await self.store.set(_D + vk.digest, data)
        grace_left = vk.previous_until - time.time()
        if vk.previous_digest and grace_left > 0:  # the old secret, still in its grace period
            await self.store.set(_D + vk.previous_digest, data, ttl_s=grace_left)
        self._cache.pop(vk.digest, None)
        self._by_id[vk.id] = vk
        return vk

    async def rotate(self, key_id: str, grace_s: float = 0.0) -> tuple[str, VirtualKey] | None:
        """A new secret for the same key (same id, limits and spend). The old secret stops working at
        once, or after `grace_s` seconds so that clients can be switched over without a refusal."""
        vk = await self.get(key_id)
        if vk is None or vk.revoked:
            return None
        secret = new_secret()
        old = vk.digest
        if vk.previous_digest:  # a grace period still running from the rotation before: it ends now
            await self.store.delete(_D + vk.previous_digest)
        now = time.time()
        vk = msgspec.structs.replace(vk, digest=digest_of(secret), hint=secret[:10], rotated=now,
                                     previous_digest=old if grace_s > 0 else "",
                                     previous_until=now + grace_s if grace_s > 0 else 0.0)
        data = _enc.encode(vk)
        await self.store.set(_I + vk.id, data)
        await self.store.set(_D + vk.digest, data)
        if grace_s > 0:
            await self.store.set(_D + old, data, ttl_s=grace_s)
        else:
            await self.store.delete(_D + old)
            self._cache.pop(old, None)
        return secret, vk

    async def revoke(self, key_id: str) -> VirtualKey | None:
        vk = await self.get(key_id)
        if vk is None:
            return None
        vk = msgspec.structs.replace(vk, revoked=vk.revoked or time.time())
        await self.store.set(_I + vk.id, _enc.encode(vk))
        digests = [vk.digest, *([vk.previous_digest] if vk.previous_digest else [])]
        await self.store.delete(*(_D + d for d in digests))
        for d in digests:
            self._cache.pop(d, None)
        self._by_id.pop(vk.id, None)
        return vk
