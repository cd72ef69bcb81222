"""The gateway configurations measured: the company one ("everything on") and the feature-cost ladder.

Each is the pinned one-worker gateway (`serve --upstream MOCK`), with capabilities switched off
through `GATEWAY_DISABLE` (gateway/worker/runtime.py) or governance switched on through a configuration
file. The ladder, each step switching more on:

    gateway-bare        every capability off (the bare pipeline)
    gateway-no-observe  embedded defaults without the audit log and metrics
    gateway             embedded defaults: cache stage, compression, ledger, audit log, metrics, store
    gateway-company     + auth with a configured key, limits for every key, input policies pii (flag),
                        injection (block), max_prompt: what a company runs, and what "everything on"
                        means in the headline tables
    gateway-governed    + a deny list and output pii redaction
    gateway-compliance  + an `http` policy beside the call, answered in 20 ms by compliance.py
    gateway-traced      gateway-company + OpenTelemetry: every request's spans exported over OTLP/HTTP
                        (batched, off the request path) to a local sink

`gateway` and `gateway-company` are full targets (every scenario); the others run one level at the
feature rate. The differences between neighbours' latencies at that rate are what a feature costs.
Every limit is far above the load and every policy passes on the benchmark's prompts, so no request
is refused: the figures are the price of checking, not of refusing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ALL_ON = "gateway"  # embedded defaults (`serve --upstream`, auth off)
COMPANY = "gateway-company"  # the company configuration: the headline "everything on"
CAPABILITIES = ("governance", "cache", "transform", "ledger", "observe")  # gateway/worker/runtime.py
COMPLIANCE_LATENCY_MS = 20  # the external check's own answer time, well under the mock's 60 ms
COMPLIANCE_TIMEOUT_MS = 500  # fail-closed: a check that cannot answer shows as errors, not as speed

# The company configuration's one key: its value comes from the environment (key_env), as in a real
# deployment; the load driver sends it as `Authorization: Bearer`. The master key opens /admin.
COMPANY_KEY_ENV = "BENCH_KEY"
COMPANY_KEY = "sk-bench-company-7f3a9c21d4e8"
MASTER_KEY = "sk-bench-master-2b6e0d94a1c7"

Governance = Literal["", "company", "governed"]


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    disable: tuple[str, ...] = ()
    governance: Governance = ""  # "": embedded defaults; "company": auth, limits, input policies; "governed": +2
    compliance: bool = False  # plus an `http` policy beside the call, answered by compliance.py
    traced: bool = False  # plus OTLP span export (OTEL_* variables) to a local sink that answers 200

    @property
    def governed(self) -> bool:
        return bool(self.governance)


COMPANY_VARIANT = Variant(
    COMPANY,
    "gateway as a company runs it: auth with a configured key, limits for every key, policies pii (flag), "
    "injection (block), max_prompt; cache, compression, ledger, audit log, metrics, embedded store",
    governance="company",
)

# The feature-only variants (one level each at the feature rate).
VARIANTS = {
    v.name: v
    for v in (
        Variant("gateway-bare", "gateway, every capability off (the bare pipeline)", disable=CAPABILITIES),
        Variant("gateway-no-observe", "embedded defaults except the audit log and metrics", disable=("observe",)),
        Variant("gateway-governed", "gateway-company + a deny list and output pii redaction", governance="governed"),
        Variant(
            "gateway-compliance",
            f"gateway-governed + a {COMPLIANCE_LATENCY_MS} ms compliance check beside the call",
            governance="governed",
            compliance=True,
        ),
        Variant("gateway-traced", "gateway-company + OpenTelemetry spans exported over OTLP/HTTP to a local sink",
                governance="company", traced=True),
    )
}

# Every gateway configuration with a configuration file, by target name.
CONFIGURED = {COMPANY: COMPANY_VARIANT, **VARIANTS}

ALL_ON_LABEL = "gateway on embedded defaults (`serve --upstream`, auth off; its overhead level at the same rate)"

# The order of the feature-cost table: each step switches more on.
LADDER = ("gateway-bare", "gateway-no-observe", ALL_ON, COMPANY, "gateway-governed", "gateway-compliance",
          "gateway-traced")

# (label, slower variant, faster variant, the bound on the p50 difference in ms or None)
DELTAS: tuple[tuple[str, str, str, float | None], ...] = (
    ("audit log + metrics", ALL_ON, "gateway-no-observe", 0.1),
    ("auth, limits + input policies (the company configuration)", COMPANY, ALL_ON, 0.3),
    ("deny list + output pii", "gateway-governed", COMPANY, None),
    (f"{COMPLIANCE_LATENCY_MS} ms compliance check beside the call", "gateway-compliance", "gateway-governed", 1.0),
    ("OpenTelemetry spans + OTLP export", "gateway-traced", COMPANY, None),
)


def ladder_label(name: str) -> str:
    return CONFIGURED[name].label if name in CONFIGURED else ALL_ON_LABEL


def company_config() -> dict[str, Any]:
    """What a company runs: auth on with a configured key, limits for every key, three input policies.

    The cache stage, compression, ledger, audit log, metrics and the embedded store are the
    defaults (all on), so they are not named here.
    """
    return {
        "auth": {"enabled": True, "keys": [{"id": "app", "key_env": COMPANY_KEY_ENV, "team": "web"}]},
        "governance": {
            # Far above any rate here: every request is counted, none refused.
            "keys": {"*": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}},
            "policies": {
                "*": [
                    {"name": "pii", "kind": "pii", "action": "flag"},
                    {"name": "injection", "kind": "injection", "action": "block"},
                    {"name": "size", "kind": "max_prompt", "max_chars": 200_000, "when": "before"},
                ]
            },
        },
    }


def governance_config(compliance_url: str | None) -> dict[str, Any]:
    """gateway-governed: the company configuration plus a deny list and output pii (and the http check)."""
    config = company_config()
    policies: list[dict[str, Any]] = config["governance"]["policies"]["*"]
    policies.insert(
        1, {"name": "deny", "kind": "deny", "patterns": [r"project\s+nightingale", r"codename\s+\w+"], "when": "before"}
    )
    policies.append({"name": "answers", "kind": "pii", "action": "redact", "on": "output"})
    if compliance_url is not None:
        policies.append(
            {
                "name": "compliance",
                "kind": "http",
                "url": compliance_url,
                "when": "beside",
                "timeout_ms": COMPLIANCE_TIMEOUT_MS,
                "fail": "closed",
            }
        )
    return config


def config_for(variant: Variant, compliance_url: str | None) -> dict[str, Any]:
    if variant.governance == "company":
        return company_config()
    return governance_config(compliance_url if variant.compliance else None)


def environment(variant: Variant) -> dict[str, str]:
    """The variant's environment: capabilities off, and the keys a configured auth reads."""
    env = {"GATEWAY_DISABLE": ",".join(variant.disable)}
    if variant.governed:
        env[COMPANY_KEY_ENV] = COMPANY_KEY
        env["GATEWAY_MASTER_KEY"] = MASTER_KEY
    return env


def client_headers(variant: Variant | None) -> dict[str, str]:
    """What the driver sends to it: the configured key when auth is on (else the default bench key)."""
    return {"authorization": f"Bearer {COMPANY_KEY}"} if variant is not None and variant.governed else {}
