"""The `governance:` settings (limits, budgets, policies, failure rules) as msgspec structs, loaded once.

They are the `governance:` section of the gateway configuration (gateway/config.py); the defaults
mean no limits and no policies. Validation errors name the offending key.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Action = Literal["block", "redact", "flag"]
PolicyKind = Literal["pii", "deny", "max_prompt", "injection", "http"]
PiiEntity = Literal["email", "phone", "card", "secret"]
FailRule = Literal["open", "closed"]


class SettingsError(Exception):
    """Governance settings that cannot be used; the message names the key."""


class Budget(msgspec.Struct, forbid_unknown_fields=True):
    usd: float
    period: Literal["day", "month"] = "month"


class Quota(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Limits of one key or one team; None = no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: PolicyKind
    action: Action = "block"
    # input: the request; output: the answer; both.
    on: Literal["input", "output", "both"] = "input"
    # Input block/flag policies: "beside" runs them beside the upstream call (the answer is held
    # until they pass, a block cancels the call); "before" runs them first (a block never reaches
    # the provider). Redacting input policies always run before the call.
    when: Literal["before", "beside"] = "beside"
    timeout_ms: float = 50.0
    fail: FailRule = "open"  # what a timeout or an error in the policy means: pass, or refuse
    entities: list[PiiEntity] = msgspec.field(default_factory=lambda: ["email", "phone", "card", "secret"])
    patterns: list[str] = []  # deny: regular expressions
    ignore_case: bool = True  # deny
    max_chars: int | None = None  # max_prompt
    max_tokens: int | None = None  # max_prompt (estimated: characters / 4)
    threshold: float = 1.0  # injection: score at which it triggers
    url: str | None = None  # http: an external compliance check (POST JSON, answers {"action": ...})


class Price(msgspec.Struct, forbid_unknown_fields=True):
    input_per_mtok: float
    output_per_mtok: float


class GovernanceSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    # A store outage: "open" admits requests without limits or budgets (counted, logged once);
    # "closed" refuses them with 503.
    store_failure: FailRule = "open"
    key_cache_ttl_s: float = 0.5  # virtual-key lookups cached per worker: revocation within this
    window_s: int = 60  # the sliding window of rpm/tpm (1-second buckets)
    leases: bool = True  # far from a limit, admit from per-worker slices of it (one store call per slice)
    token_estimate: Literal["bytes", "tokenizer"] = "bytes"  # bytes: len(body) / 4
    default_output_tokens: int = 256  # reserved for the answer when the request sets no max_tokens
    keys: dict[str, Quota] = {}  # by key id; "*" = every key without its own entry
    teams: dict[str, Quota] = {}  # by team; "*" = every team without its own entry
    policies: dict[str, list[PolicySpec]] = {}  # by model route name; "*" = routes without their own
    prices: dict[str, Price] = {}  # USD per million tokens by model; overrides the price table


def validate(s: GovernanceSettings) -> None:
    if s.window_s < 1:
        raise SettingsError("governance.window_s: must be >= 1")
    if s.key_cache_ttl_s > 1.0:
        raise SettingsError("governance.key_cache_ttl_s: must be <= 1 (revocation within a second)")
    for scope, table in (("keys", s.keys), ("teams", s.teams)):
        for name, q in table.items():
            for field in ("rpm", "tpm"):
                v = getattr(q, field)
                if v is not None and v < 0:
                    raise SettingsError(f"governance.{scope}.{name}.{field}: must be >= 0")
            if q.budget is not None and q.budget.usd < 0:
                raise SettingsError(f"governance.{scope}.{name}.budget.usd: must be >= 0")
    for route, specs in s.policies.items():
        for i, p in enumerate(specs):
            where = f"governance.policies.{route}[{i}] ({p.name})"
            if p.kind == "deny" and not p.patterns:
                raise SettingsError(f"{where}.patterns: a deny policy needs at least one pattern")
            if p.kind == "max_prompt" and p.max_chars is None and p.max_tokens is None:
                raise SettingsError(f"{where}: max_prompt needs max_chars or max_tokens")
            if p.kind in ("max_prompt", "injection", "http") and p.action == "redact":
                raise SettingsError(f"{where}.action: {p.kind} can block or flag, not redact")
            if p.kind == "http" and not p.url:
                raise SettingsError(f"{where}.url: required for an http policy")
            if p.timeout_ms <= 0:
                raise SettingsError(f"{where}.timeout_ms: must be > 0")


def restore_on_keys(section: Any) -> Any:
    """YAML 1.1 reads a bare `on:` key as the boolean true: give policy specs their `on` back.

    The docs (and users) write `on: output`; PyYAML hands that over as {True: "output"}, which no
    struct can accept. Only policy specs have an `on` field, so only their mappings are touched.
    """
    if not isinstance(section, dict) or not isinstance(section.get("policies"), dict):
        return section
    policies = {
        route: [{("on" if key is True else key): value for key, value in spec.items()}
                if isinstance(spec, dict) else spec for spec in specs]
        if isinstance(specs, list) else specs
        for route, specs in section["policies"].items()
    }
    return {**section, "policies": policies}


def parse_settings(data: Any) -> GovernanceSettings:
    if isinstance(data, dict) and "governance" in data:
        data = data["governance"]
    data = restore_on_keys(data)
    try:
        settings = msgspec.convert(data or {}, GovernanceSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError("governance: " + str(exc).replace("$.", "governance.")) from None
    validate(settings)
    return settings


def load_settings(cfg: Any) -> GovernanceSettings:
    """The `governance:` section of the gateway configuration, validated."""
    section: GovernanceSettings = cfg.governance
    validate(section)
    return section
