"""The governance admin API (master key only): virtual keys, spend, and this worker's counters.

    POST /admin/keys          {"owner", "team", "models", "rpm", "tpm", "budget": {"usd", "period"}, "name"}
                              -> 201 with the key, shown this once
    GET  /admin/keys          every key (never a secret), with its spend today and this month
    POST /admin/keys/update   {"id", and any of "owner", "team", "models", "rpm", "tpm", "budget", "name"}
                              -> the changed record (null clears a limit); every worker within a second
    POST /admin/keys/rotate   {"id", "grace_s"} -> a new secret for the same key; the old one stops
                              working at once, or after grace_s seconds
    POST /admin/keys/revoke   {"id"} -> refused on every worker and pod within a second
    GET  /admin/spend         ?key=<id> or ?team=<name> -> USD spent this day and month, and the budget
    GET  /admin/governance    this worker: limit checks bypassed during store outages, policy counters
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
from msgspec import UNSET, UnsetType

from gateway.errors import BadRequest, NotFound, ServiceUnavailable
from gateway.governance.auth import Authenticator, KeyRecord
from gateway.governance.keys import KeyStore, VirtualKey
from gateway.governance.limits import Limiter
from gateway.governance.settings import Budget
from gateway.worker.routes import Routes, admin_only

JSON = [("content-type", "application/json")]
_enc = msgspec.json.Encoder()


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    owner: str = ""
    team: str | None = None
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None
    name: str = ""


class UpdateKey(msgspec.Struct, forbid_unknown_fields=True):
    """Absent fields stay as they are; null clears (a limit, the team, the model list)."""

    id: str
    owner: str | UnsetType = UNSET
    team: str | UnsetType | None = UNSET
    models: list[str] | UnsetType | None = UNSET
    rpm: int | UnsetType | None = UNSET
    tpm: int | UnsetType | None = UNSET
    budget: Budget | UnsetType | None = UNSET
    name: str | UnsetType = UNSET


class KeyId(msgspec.Struct):
    id: str


class RotateKey(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    grace_s: float = 0.0


_create_dec = msgspec.json.Decoder(CreateKey)
_update_dec = msgspec.json.Decoder(UpdateKey)
_rotate_dec = msgspec.json.Decoder(RotateKey)
_id_dec = msgspec.json.Decoder(KeyId)
_MAX_GRACE_S = 7 * 86400.0


def _decode(dec: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return dec.decode(body or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(f"Invalid request: {str(exc).replace('$.', '')}") from None


def public(vk: VirtualKey) -> dict[str, Any]:
    out = msgspec.to_builtins(vk)
    out.pop("digest", None)
    out.pop("previous_digest", None)
    return out


class Admin:
    def __init__(self, auth: Authenticator, config_teams: dict[str, str | None], keystore: KeyStore,
                 limiter: Limiter, stats: Counter[str]) -> None:
        self.auth = auth
        self.keys = keystore
        self.limiter = limiter
        self.stats = stats
        self.config_teams = config_teams

    def routes(self) -> Routes:
        routes: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("POST", "/admin/keys"): self.create,
            ("GET", "/admin/keys"): self.list,
            ("POST", "/admin/keys/update"): self.update,
            ("POST", "/admin/keys/rotate"): self.rotate,
            ("POST", "/admin/keys/revoke"): self.revoke,
            ("GET", "/admin/spend"): self.spend,
            ("GET", "/admin/governance"): self.status,
        }
        return {route: admin_only(self.auth, handler) for route, handler in routes.items()}

    async def create(self, scope: Any, proto: Any) -> None:
        req: CreateKey = _decode(_create_dec, await proto())
        for field in ("rpm", "tpm"):
            if (getattr(req, field) or 0) < 0:
                raise BadRequest(f"{field} must be >= 0", param=field)
        secret, vk = await self.keys.create(owner=req.owner, team=req.team, models=req.models, rpm=req.rpm,
                                            tpm=req.tpm, budget=req.budget, name=req.name)
        proto.response_bytes(201, JSON, _enc.encode({**public(vk), "key": secret}))

    async def list(self, scope: Any, proto: Any) -> None:
        keys = await self.keys.list()
        out = []
        for vk in keys:
            item = public(vk)
            if self.limiter.counters is not None:
                item["spend"] = await self.limiter.spend(KeyRecord(id=vk.id, team=vk.team), None)
                if vk.quota.budget is not None:
                    item["spend"]["budget"] = msgspec.to_builtins(vk.quota.budget)
            out.append(item)
        proto.response_bytes(200, JSON, _enc.encode({"object": "list", "data": out}))

    async def update(self, scope: Any, proto: Any) -> None:
        req: UpdateKey = _decode(_update_dec, await proto())
        changes = {f: v for f in req.__struct_fields__ if f != "id" and (v := getattr(req, f)) is not UNSET}
        if not changes:
            raise BadRequest("Nothing to change: give at least one of owner, team, models, rpm, tpm, budget, name.")
        for field in ("rpm", "tpm"):
            if (changes.get(field) or 0) < 0:
                raise BadRequest(f"{field} must be >= 0", param=field)
        vk = await self.keys.update(req.id, **changes)
        if vk is None:
            raise NotFound(f"No active key {req.id!r}.")
        proto.response_bytes(200, JSON, _enc.encode(public(vk)))

    async def rotate(self, scope: Any, proto: Any) -> None:
        req: RotateKey = _decode(_rotate_dec, await proto())
        if not 0 <= req.grace_s <= _MAX_GRACE_S:
            raise BadRequest(f"grace_s must be between 0 and {_MAX_GRACE_S:.0f} seconds", param="grace_s")
        rotated = await self.keys.rotate(req.id, req.grace_s)
        if rotated is None:
            raise NotFound(f"No active key {req.id!r}.")
        secret, vk = rotated
        proto.response_bytes(200, JSON, _enc.encode({**public(vk), "key": secret}))

    async def revoke(self, scope: Any, proto: Any) -> None:
        req: KeyId = _decode(_id_dec, await proto())
        vk = await self.keys.revoke(req.id)
        if vk is None:
            raise NotFound(f"No key {req.id!r}.")
        proto.response_bytes(200, JSON, _enc.encode(public(vk)))

    async def spend(self, scope: Any, proto: Any) -> None:
        query = parse_qs(scope.query_string or "")
        if self.limiter.counters is None:
            raise ServiceUnavailable("Spend is not tracked (no shared store).")
        if "key" in query:
            key_id = query["key"][0]
            vk = await self.keys.get(key_id) if key_id.startswith("vk_") else None
            team = vk.team if vk is not None else self.config_teams.get(key_id)
            if vk is None and key_id not in self.config_teams and key_id != "anonymous":
                raise NotFound(f"No key {key_id!r}.")
            result = await self.limiter.spend(KeyRecord(id=key_id, team=team), None)
            result["key"] = key_id
            if vk is not None and vk.quota.budget is not None:
                result["budget"] = msgspec.to_builtins(vk.quota.budget)
        elif "team" in query:
            team = query["team"][0]
            result = await self.limiter.spend(None, team)
            result["team"] = team
        else:
            raise BadRequest("Name a key (?key=<id>) or a team (?team=<name>).")
        proto.response_bytes(200, JSON, _enc.encode(result))

    async def status(self, scope: Any, proto: Any) -> None:
        body = {
            "limits": {"active": self.limiter.active, "bypassed": self.limiter.bypassed,
                       "outages": self.limiter.outages, "store_failure": self.limiter.s.store_failure},
            "policies": dict(sorted(self.stats.items())),
        }
        proto.response_bytes(200, JSON, _enc.encode(body))
