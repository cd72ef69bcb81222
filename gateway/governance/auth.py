"""The one key resolver: configured keys (SHA-256 digests), the master key, and virtual keys issued
by the gateway (looked up in the key store), with constant-time checks.

The table never holds a key, only its digest; the presented key's digest is compared with every
configured digest by `hmac.compare_digest`, without stopping at the first match, so the time taken
says nothing about which key (or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Protocol

import msgspec

from gateway.config import AuthConfig
from gateway.errors import PermissionDenied, Unauthorized


class KeyRecord(msgspec.Struct, frozen=True):
    id: str
    team: str | None = None
    models: frozenset[str] | None = None  # None = every model
    admin: bool = False


ANONYMOUS = KeyRecord(id="anonymous")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_of(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: OpenAI SDKs use Authorization: Bearer, Anthropic SDKs x-api-key."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


class VirtualKeys(Protocol):
    """Keys the gateway issued (gateway.governance.keys.KeyStore)."""

    async def lookup(self, key: str) -> KeyRecord | None: ...


class Authenticator:
    def __init__(self, cfg: AuthConfig, environ: Mapping[str, str] | None = None,
                 virtual: VirtualKeys | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = cfg.enabled
        self.virtual = virtual
        self._keys: list[tuple[bytes, KeyRecord]] = []
        for k in cfg.keys:
            digest = k.key_sha256 or (hash_key(env[k.key_env]) if k.key_env and env.get(k.key_env) else None)
            if digest:
                models = frozenset(k.models) if k.models is not None else None
                self._keys.append((bytes.fromhex(digest), KeyRecord(id=k.id, team=k.team, models=models)))
        master = env.get(cfg.master_key_env, "")
        self._master = hashlib.sha256(master.encode()).digest() if master else None
        if self._master:
            self._keys.append((self._master, KeyRecord(id="master", admin=True)))

    def authenticate(self, headers: Mapping[str, str]) -> KeyRecord:
        if not self.enabled:
            return ANONYMOUS
        key = bearer_of(headers)
        if not key:
            raise Unauthorized("Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'.")
        digest = hashlib.sha256(key.encode()).digest()
        found: KeyRecord | None = None
        for stored, record in self._keys:
            if hmac.compare_digest(digest, stored):
                found = record
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        return found

    async def resolve(self, headers: Mapping[str, str], model: str | None = None) -> KeyRecord:
        """Configured keys first, then virtual keys; with `model`, the key must be allowed to use it."""
        try:
            record = self.authenticate(headers)
        except Unauthorized:
            key = bearer_of(headers)
            found = await self.virtual.lookup(key) if (self.virtual is not None and key) else None
            if found is None:
                raise
            record = found
        if model is not None:
            self.check_model(record, model)
        return record

    def require_admin(self, headers: Mapping[str, str]) -> None:
        if not self._master:
            if not self.enabled:
                return  # local use with auth off: admin endpoints open on loopback
            raise PermissionDenied("Admin endpoints need a master key (set GATEWAY_MASTER_KEY).")
        key = bearer_of(headers) or ""
        if not hmac.compare_digest(hashlib.sha256(key.encode()).digest(), self._master):
            raise Unauthorized("Admin endpoints need the master key.")

    @staticmethod
    def check_model(record: KeyRecord, model: str) -> None:
        if record.models is not None and model not in record.models:
            raise PermissionDenied(f"This key may not use the model {model!r}.")
