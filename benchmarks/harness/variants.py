"""The gateway variants of the feature-cost scenario: what each switches off, the governance each gets.

Each variant is the pinned one-worker gateway with capabilities switched off through
`GATEWAY_DISABLE` (gateway/plugins.py) or governance switched on through a configuration file; the
differences between their overheads at one rate are what a feature costs:

    audit log + metrics     = gateway            - gateway-no-observe
    limits + policies       = gateway-governed   - gateway
    compliance beside call  = gateway-compliance - gateway-governed
    tracing (OTLP export)   = gateway-traced     - gateway

Every limit is far above the load and every policy passes on the benchmark's prompts, so no request
is refused: the figures are the price of checking, not of refusing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_ON = "gateway"  # the everything-on figure is the ordinary gateway target's
ALL_ON_LABEL = "gateway, everything on (its overhead level at the same rate)"
CAPABILITIES = ("store", "governance", "cache", "transform", "ledger", "observe")
COMPLIANCE_LATENCY_MS = 20  # the external check's own answer time, well under the mock's 60 ms
COMPLIANCE_TIMEOUT_MS = 500  # fail-closed: a check that cannot answer shows as errors, not as speed


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    disable: tuple[str, ...] = ()
    governed: bool = False  # limits for every key and the pass-through policy set
    compliance: bool = False  # plus an `http` policy beside the call, answered by compliance.py
    traced: bool = False  # every request sampled, spans exported over OTLP/HTTP to otlp_sink.py


VARIANTS = {
    v.name: v
    for v in (
        Variant("gateway-bare", "gateway, every capability off (the bare pipeline)", disable=CAPABILITIES),
        Variant("gateway-no-observe", "gateway, everything on except the audit log and metrics", disable=("observe",)),
        Variant("gateway-governed", "gateway, everything on + limits and a pass-through policy set", governed=True),
        Variant(
            "gateway-compliance",
            f"gateway-governed + a {COMPLIANCE_LATENCY_MS} ms compliance check beside the call",
            governed=True,
            compliance=True,
        ),
        Variant("gateway-traced", "gateway, everything on + OpenTelemetry spans for every request, exported",
                traced=True),
    )
}

# The order of the feature-cost table: each step switches more on.
LADDER = ("gateway-bare", "gateway-no-observe", ALL_ON, "gateway-governed", "gateway-compliance", "gateway-traced")

# (label, slower variant, faster variant, the bound on the p50 difference in ms)
DELTAS = (
    ("audit log + metrics", ALL_ON, "gateway-no-observe", 0.1),
    ("limits + policies", "gateway-governed", ALL_ON, 0.3),
    (f"{COMPLIANCE_LATENCY_MS} ms compliance check beside the call", "gateway-compliance", "gateway-governed", 1.0),
    ("tracing: every request sampled, OTLP export", "gateway-traced", ALL_ON, 0.1),
)

# The traced variant's environment, beside the collector's endpoint: every request is recorded.
TRACED_ENV = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "1000",
              "OTEL_SERVICE_NAME": "gateway-bench"}


def governance_config(compliance_url: str | None) -> dict[str, Any]:
    """The configuration file of a governed variant (auth off, as with `--upstream` alone)."""
    policies: list[dict[str, Any]] = [
        {"name": "pii", "kind": "pii", "action": "flag"},
        {"name": "deny", "kind": "deny", "patterns": [r"project\s+nightingale", r"codename\s+\w+"], "when": "before"},
        {"name": "injection", "kind": "injection", "action": "block"},
        {"name": "size", "kind": "max_prompt", "max_chars": 200_000, "when": "before"},
        {"name": "answers", "kind": "pii", "action": "redact", "on": "output"},
    ]
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
    return {
        "auth": {"enabled": False},
        "governance": {
            # Far above any rate here: every request is counted, none refused.
            "keys": {"*": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}},
            "policies": {"*": policies},
        },
    }
