"""The feature-cost scenario of `make bench`: variants' levels, the deltas between them, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.harness import results, scenarios, tables, targets, variants  # noqa: E402


def _level(
    scenario: str, p50: float, p99: float, success: float = 1.0, cpu: float = 0.25, **extra: Any
) -> dict[str, Any]:
    return {
        "key": f"{scenario}@500rps",
        "scenario": scenario,
        "mode": "open",
        "value": 500,
        "requests": 2000,
        "ok": int(2000 * success),
        "errors": 2000 - int(2000 * success),
        "success_rate": success,
        "rps": 500.0,
        "latency_ms": {"count": 2000, "p50": p50, "p90": p99, "p95": p99, "p99": p99, "max": p99 + 1, "mean": p50},
        "driver": {"cpu_util": 0.1, "max_schedule_lag_ms": 0.5},
        "resources": {"cpu_s_per_1k": cpu, "requests_total": 2500},
        **extra,
    }


def _target(*levels: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "pinned": True, "workers": 1, "levels": list(levels)}


def _doc(compliance_success: float = 1.0) -> dict[str, Any]:
    return {
        "started": "2026-01-02T03:04:05+00:00",
        "plan": "full",
        "standin": False,
        "machine": {"host": "box", "cpu": "cpu", "cores": 2, "memory_gb": 24, "kernel": "6", "python": "3.11"},
        "placement": {"target_cores": "0", "driver_and_mock_cores": "1"},
        "settings": {"level_s": 4, "warmup_s": 1, "mock_latency_ms": 60, "stream_chunks": 50, "feature_rate": 500},
        "versions": {},
        "targets": {
            "direct": _target(_level("overhead", 60.10, 60.40)),
            # the everything-on figure is the gateway's own overhead level at the same rate
            "gateway": _target(_level("overhead", 60.40, 62.00), _level("throughput", 70.0, 90.0)),
            "gateway-company": _target(
                _level("overhead", 60.55, 62.20, cpu=0.40, feature_counts={}), _level("throughput", 72.0, 95.0)
            ),
            "gateway-bare": _target(_level("features", 60.22, 61.00)),
            "gateway-no-observe": _target(_level("features", 60.34, 61.50)),
            "gateway-governed": _target(
                _level("features", 60.61, 62.50, cpu=0.45, feature_counts={}),
            ),
            "gateway-compliance": _target(
                _level("features", 60.62, 62.40, compliance_success, feature_counts={"compliance checks": 2500}),
            ),
            "gateway-traced": _target(_level("features", 60.59, 62.30, cpu=0.43, feature_counts={})),
        },
    }


def test_the_variants_run_one_level_at_the_feature_rate() -> None:
    plan = scenarios.full_plan()
    for name in variants.VARIANTS:
        assert name in plan.targets
        assert [lv.key for lv in plan.levels_for(name)] == ["features@500rps"]
    # The overhead levels already hold the gateway's and the direct call's figures at that rate.
    assert "features@500rps" not in {lv.key for lv in plan.levels_for("gateway")}
    # The ladder is measured in one stretch: embedded defaults, the company configuration, the variants.
    ladder = [plan.targets.index(name) for name in variants.LADDER]
    assert sorted(ladder) == list(range(min(ladder), min(ladder) + len(ladder)))
    assert plan.targets.index("gateway-company") == plan.targets.index("gateway") + 1
    assert "features@500rps" not in {lv.key for lv in plan.levels_for("gateway-company")}
    quick = scenarios.quick_plan()
    assert {"gateway-bare", "gateway-compliance", "gateway-company"} <= set(quick.targets)


def test_gateway_and_direct_get_a_feature_level_when_no_overhead_level_has_that_rate() -> None:
    plan = scenarios.quick_plan()
    plan.overhead_rates = [100, 300]
    assert "features@500rps" in {lv.key for lv in plan.levels_for("gateway")}
    assert "features@500rps" in {lv.key for lv in plan.levels_for("gateway-company")}
    assert "features@500rps" in {lv.key for lv in plan.levels_for("direct")}
    assert "features@500rps" not in {lv.key for lv in plan.levels_for("nginx")}
    plan.targets = ["direct", "gateway", "nginx"]  # no variants: nothing extra
    assert "features@500rps" not in {lv.key for lv in plan.levels_for("gateway")}


def test_feature_costs_are_differences_of_the_variants_percentiles() -> None:
    doc = _doc()
    results.add_overheads(doc)
    costs = results.feature_costs(doc)
    assert costs is not None and costs["rate"] == 500
    rows = {v["target"]: v for v in costs["variants"]}
    assert list(rows) == list(variants.LADDER)
    assert rows["gateway-bare"]["overhead_p50"] == pytest.approx(0.12)
    assert rows["gateway"]["overhead_p50"] == pytest.approx(0.30)
    assert rows["gateway-compliance"]["counts"] == {"compliance checks": 2500}
    deltas = {d["feature"]: d for d in costs["deltas"]}
    audit = deltas["audit log + metrics"]
    assert (audit["slower"], audit["faster"]) == ("gateway", "gateway-no-observe")
    assert audit["p50"] == pytest.approx(0.06) and audit["p99"] == pytest.approx(0.5)
    assert audit["ok"] is True  # 0.06 < 0.1
    assert audit["cpu_ms"] == 0.0
    company = deltas["auth, limits + input policies (the company configuration)"]
    assert (company["slower"], company["faster"]) == ("gateway-company", "gateway")
    assert company["p50"] == pytest.approx(0.15) and company["ok"] is True  # < 0.3
    assert company["cpu_ms"] == pytest.approx(0.15)
    assert rows["gateway-company"]["overhead_p50"] == pytest.approx(0.45)  # its own overhead level
    extra = deltas["deny list + output pii"]
    assert extra["p50"] == pytest.approx(0.06) and extra["bound_ms"] is None and extra["ok"] is None
    beside = deltas["20 ms compliance check beside the call"]
    assert beside["p50"] == pytest.approx(0.01) and beside["p99"] == pytest.approx(-0.1)
    assert beside["ok"] is True
    traced = deltas["OpenTelemetry spans + OTLP export"]
    assert (traced["slower"], traced["faster"]) == ("gateway-traced", "gateway-company")
    assert traced["p50"] == pytest.approx(0.04) and traced["cpu_ms"] == pytest.approx(0.03)


def test_a_cost_over_its_bound_or_a_variant_that_lost_requests_is_not_met() -> None:
    doc = _doc(compliance_success=0.95)
    doc["targets"]["gateway-company"]["levels"][0]["latency_ms"]["p50"] = 61.0  # +0.6 over embedded defaults
    deltas = {d["feature"]: d for d in results.feature_costs(doc)["deltas"]}  # type: ignore[index]
    assert deltas["auth, limits + input policies (the company configuration)"]["ok"] is False
    assert deltas["20 ms compliance check beside the call"]["p50"] == pytest.approx(0.01)  # within its bound
    assert deltas["20 ms compliance check beside the call"]["ok"] is False  # 5% refused: not passing through


def test_missing_variants_give_missing_deltas_and_no_section_without_any() -> None:
    doc = _doc()
    for name in ("gateway-no-observe", "gateway-governed"):
        del doc["targets"][name]
    deltas = {d["feature"]: d for d in results.feature_costs(doc)["deltas"]}  # type: ignore[index]
    assert deltas["audit log + metrics"]["p50"] is None and deltas["audit log + metrics"]["ok"] is None
    assert deltas["20 ms compliance check beside the call"]["ok"] is None
    assert deltas["auth, limits + input policies (the company configuration)"]["ok"] is True
    doc["targets"] = {k: v for k, v in doc["targets"].items() if k in ("direct", "gateway")}
    assert results.feature_costs(doc) is None
    assert not any(c["check"].startswith("audit log") for c in results.checks(doc))


def test_checks_and_markdown_carry_the_feature_costs() -> None:
    doc = _doc()
    results.add_overheads(doc)
    doc["checks"] = results.checks(doc)
    got = {c["check"]: c for c in doc["checks"]}
    assert got["audit log + metrics p50"]["target"] == "< 0.1 ms"
    assert got["audit log + metrics p50"]["measured"] == "+0.06 ms" and got["audit log + metrics p50"]["ok"]
    assert got["auth, limits + input policies (the company configuration) p50"]["target"] == "< 0.3 ms"
    assert "deny list + output pii p50" not in got  # no bound set: in the table, not a target
    assert got["20 ms compliance check beside the call p50"]["target"] == "< 1 ms (≈ 0)"
    md = tables.render(doc, {})
    section = md.split("## Feature costs (open loop at 500 RPS)", 1)[1].split("## Resources", 1)[0]
    assert "| **gateway-bare** |" in section and "+0.12 / +0.60" in section
    assert "| **gateway-company** |" in section and "| deny list + output pii |" in section and "none set" in section
    assert "compliance checks 2,500" in section and "no policy flags, blocks or failures" in section
    row = "| audit log + metrics | gateway − gateway-no-observe | +0.060 | +0.50 | +0.000 | < 0.1 ms | yes |"
    assert row in section
    # The variants have their own section: not a row of dashes in the overhead and throughput tables.
    overhead = md.split("## Overhead", 1)[1].split("## Throughput", 1)[0]
    assert "gateway-bare" not in overhead and "**gateway**" in overhead and "**gateway-company**" in overhead


def _prompts() -> list[str]:
    """Every message of a pass-through request the driver can send."""
    body = json.loads(
        scenarios.passthrough_body()
        .replace(b"{ID}", b"6a3f1c0e2b4d9-1234567")
        .replace(b"{WORDS}", b"falcon cipher rocket bishop comet anchor")
    )
    return [m["content"] for m in body["messages"]]


def test_the_company_configuration_is_auth_limits_and_three_input_policies(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.governance.auth import Authenticator
    from gateway.governance.detect import Injection, Pii

    company = variants.company_config()
    assert company["auth"]["enabled"] is True
    assert company["auth"]["keys"] == [{"id": "app", "key_env": "BENCH_KEY", "team": "web"}]
    assert company["governance"]["keys"] == {"*": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}}
    policies = company["governance"]["policies"]["*"]
    assert [(p["kind"], p.get("action")) for p in policies] == [
        ("pii", "flag"),
        ("injection", "block"),
        ("max_prompt", None),
    ]
    assert policies[2]["max_chars"] == 200_000
    # Nothing else is named: the cache, compression, ledger, audit log, metrics and store are defaults.
    assert set(company) == {"auth", "governance"}
    # The file the harness writes (JSON is YAML) is a valid configuration with `--upstream`...
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(company))
    env = variants.environment(variants.COMPANY_VARIANT)
    loaded = load_config(path, upstream="http://127.0.0.1:9", environ=env)
    assert loaded.auth.enabled and loaded.cache.enabled and loaded.observe.audit and loaded.observe.metrics
    assert loaded.store.redis_url == ""  # the embedded store
    # ...whose key is the one the driver sends, and only that one.
    auth = Authenticator(loaded.auth, environ=env)
    sent = variants.client_headers(variants.COMPANY_VARIANT)
    assert auth.authenticate(sent).id == "app" and auth.authenticate(sent).team == "web"
    with pytest.raises(Exception, match="Incorrect API key"):
        auth.authenticate({"authorization": f"Bearer {targets.API_KEY}"})
    # Every prompt the driver can send passes every input policy (no flag, no block).
    for prompt in _prompts():
        assert Pii(["email", "phone", "card", "secret"]).find(prompt) is None
        assert Injection(1.0).find(prompt) is None
        assert len(prompt) < policies[2]["max_chars"]


def test_governed_is_the_company_configuration_plus_two_policies(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.governance.detect import Deny

    plain = variants.governance_config(None)
    with_check = variants.governance_config("http://127.0.0.1:9/check")
    assert plain["auth"] == variants.company_config()["auth"]
    assert plain["governance"]["keys"]["*"]["rpm"] >= 10**6
    kinds = [(p["kind"], p.get("on", "input")) for p in plain["governance"]["policies"]["*"]]
    assert kinds == [
        ("pii", "input"),
        ("deny", "input"),
        ("injection", "input"),
        ("max_prompt", "input"),
        ("pii", "output"),
    ]
    http = with_check["governance"]["policies"]["*"][-1]
    assert http["kind"] == "http" and http["when"] == "beside" and http["fail"] == "closed"
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(with_check))
    loaded = load_config(path, upstream="http://127.0.0.1:9", environ={})
    assert [p.name for p in loaded.governance.policies["*"]][-1] == "compliance"
    spec = plain["governance"]["policies"]["*"]
    for prompt in _prompts():
        assert Deny(spec[1]["patterns"], True).find(prompt) is None
    # Configured variants carry the keys they read; the bare ones only switch capabilities off.
    assert variants.environment(variants.VARIANTS["gateway-governed"])["BENCH_KEY"] == variants.COMPANY_KEY
    bare = variants.VARIANTS["gateway-bare"]
    assert variants.environment(bare) == {"GATEWAY_DISABLE": ",".join(variants.CAPABILITIES)}
    assert variants.client_headers(variants.VARIANTS["gateway-bare"]) == {}


def test_the_compliance_service_answers_pass_after_its_delay_and_counts_checks() -> None:
    import asyncio
    import time

    from benchmarks.harness.compliance import Compliance

    class Proto:
        def __init__(self) -> None:
            self.sent: list[tuple[int, bytes]] = []

        async def __call__(self) -> bytes:
            return b'{"direction": "input", "text": "hi"}'

        def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.sent.append((status, body))

    class Scope:
        def __init__(self, method: str) -> None:
            self.method = method

    app, proto = Compliance(), Proto()
    app.delay = 0.02
    started = time.perf_counter()
    asyncio.run(app.__rsgi__(Scope("POST"), proto))
    assert time.perf_counter() - started >= 0.02
    asyncio.run(app.__rsgi__(Scope("GET"), proto))
    (status, verdict), (_, count) = proto.sent
    assert status == 200 and json.loads(verdict)["action"] not in ("block", "flag")
    assert json.loads(count) == {"checks": 1}
