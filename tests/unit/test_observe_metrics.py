"""Metrics: per-worker registry, per-pid snapshots summed across workers, Prometheus text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.observe.entry import AuditEntry, MetaCacheInfo
from gateway.observe.exposition import hit_ratios, render
from gateway.observe.metrics import (
    Metrics,
    ModelLabels,
    dump,
    load_others,
    merge,
    observe_resilience,
    prune_stale,
)


def entry(**kw: object) -> AuditEntry:
    base: dict[str, object] = dict(ts=1.0, request_id="r", key_id="k", endpoint="chat", model="gpt-4o-x",
                                   requested_model="gpt-4o", provider="openai", deployment="gpt-4o-x", status=200,
                                   routing_strategy="direct", routing_reason="provider:openai", latency_ms=50.0,
                                   ttfb_ms=45.0, upstream_ms=44.0, overhead_ms=1.0, tokens_in=10, tokens_out=5)
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}; checks every sample line is well-formed."""
    out: dict[str, float] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line == "" or line.startswith(("# HELP ", "# TYPE ")), line
            continue
        m = sample.match(line)
        assert m, f"malformed sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_observe_and_render() -> None:
    m = Metrics()
    m.observe(entry())
    m.observe(entry(status=502, error="upstream_error", tokens_in=0, tokens_out=0))
    hit = MetaCacheInfo(hit=True, phase=3, tier="exact", tokens_saved=40)
    m.observe(entry(metacache=hit, provider=None, upstream_ms=None, routing_strategy="cache",
                    routing_reason="cache_hit:tier=exact", model="gpt-4o", saved_usd=0.5, saved_cache_usd=0.5))
    m.observe(entry(status=401, provider=None, routing_strategy="rejected", error="invalid_api_key",
                    upstream_ms=None, ttfb_ms=None))
    text = render(m, m.snapshot()).decode()
    s = parse(text)
    assert s['gateway_requests_total{endpoint="chat",model="gpt-4o",status="200",cache_phase="miss"}'] == 1
    assert s['gateway_requests_total{endpoint="chat",model="gpt-4o",status="200",cache_phase="exact"}'] == 1
    assert s['gateway_rejections_total{reason="invalid_api_key"}'] == 1
    assert s['gateway_upstream_errors_total{provider="openai",status="502"}'] == 1
    assert s['gateway_tokens_total{kind="saved_cache",model="gpt-4o"}'] == 40
    assert s['gateway_savings_usd_total{layer="cache"}'] == 0.5
    assert s['gateway_cache_hit_ratio{phase="exact"}'] == 0.25
    assert s['gateway_request_duration_seconds_count{endpoint="chat"}'] == 4
    assert s['gateway_request_duration_seconds_bucket{endpoint="chat",le="0.05"}'] == 4
    assert s['gateway_request_duration_seconds_bucket{endpoint="chat",le="0.025"}'] == 0
    assert s['gateway_overhead_seconds_bucket{endpoint="chat",le="0.001"}'] == 4
    assert s['gateway_upstream_duration_seconds_count{provider="openai"}'] == 2
    assert s['gateway_ttfb_seconds_count{endpoint="chat"}'] == 3
    assert "# TYPE gateway_request_duration_seconds histogram" in text


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe(entry(requested_model='we"ird\\model\n'))
    s = parse(render(m, m.snapshot()).decode())
    assert any('model="we\\"ird\\\\model\\n"' in k for k in s)


def test_workers_sum_and_dead_workers_keep_counters_not_gauges(tmp_path: Path) -> None:
    a, b = Metrics(), Metrics()
    for _ in range(3):
        a.observe(entry())
    for _ in range(2):
        b.observe(entry())
    a.gauge("gateway_workers", "Live worker processes.", ()).set((), 1)
    b.gauge("gateway_workers", "Live worker processes.", ()).set((), 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    dump(b.snapshot(), str(tmp_path), dead_pid)
    dump(a.snapshot(), str(tmp_path), os.getpid())  # our own file is skipped: live values are used instead
    (tmp_path / "junk.msgpack").write_bytes(b"x")
    (tmp_path / "123.msgpack").write_bytes(b"not msgpack")
    others = load_others(str(tmp_path), os.getpid())
    assert [alive for _, alive in others] == [False]
    pod = merge([(a.snapshot(), True), *others])
    s = parse(render(a, pod).decode())
    assert s['gateway_requests_total{endpoint="chat",model="gpt-4o",status="200",cache_phase="miss"}'] == 5
    assert s['gateway_request_duration_seconds_count{endpoint="chat"}'] == 5
    assert s["gateway_workers"] == 1  # the dead worker's gauge is not counted
    assert hit_ratios(pod) == {"all": 0.0}


def test_prune_stale_instance_dirs(tmp_path: Path) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    mine = tmp_path / f"gateway-metrics-0-{os.getpid()}"
    stale = tmp_path / f"gateway-metrics-0-{dead}"
    live_other = tmp_path / f"gateway-metrics-0-{os.getppid()}"
    unrelated = tmp_path / f"something-{dead}"
    for d in (mine, stale, live_other, unrelated):
        d.mkdir()
        (d / "1.msgpack").write_bytes(b"")
    prune_stale(str(mine))
    assert mine.exists() and live_other.exists() and unrelated.exists() and not stale.exists()


def _routes() -> ModelLabels:
    from gateway.config import load_config

    cfg = load_config(None, environ={})  # embedded defaults: mock-gpt-4o, mock-claude and "*"
    return ModelLabels.from_routes(
        [*cfg.models, type(cfg.models[0])(name="gpt-4o", aliases=["default"],
                                           deployments=[type(cfg.models[0].deployments[0])("mock", "gpt-4o-x")])]
    )


def test_model_labels_come_from_the_routes_never_from_the_client() -> None:
    m = Metrics(_routes())
    m.observe(entry(requested_model="gpt-4o", model="gpt-4o-x"))  # a route and its deployment
    m.observe(entry(requested_model="default", model="gpt-4o-x"))  # an alias: the route's name
    m.observe(entry(requested_model="anything-else", model="anything-else"))  # the wildcard route
    m.observe(entry(key_id=None, status=401, requested_model="x" * 5000, model="x" * 5000, provider=None,
                    routing_strategy="rejected", error="invalid_api_key"))  # before auth
    s = parse(render(m, m.snapshot()).decode())
    assert s['gateway_requests_total{endpoint="chat",model="gpt-4o",status="200",cache_phase="miss"}'] == 2
    assert s['gateway_requests_total{endpoint="chat",model="*",status="200",cache_phase="miss"}'] == 1
    assert s['gateway_requests_total{endpoint="chat",model="unknown",status="401",cache_phase="miss"}'] == 1
    assert s['gateway_tokens_total{kind="input",model="gpt-4o-x"}'] == 20
    assert s['gateway_tokens_total{kind="input",model="*"}'] == 10


def test_unauthenticated_flood_adds_no_series() -> None:
    m = Metrics(_routes())
    m.observe(entry())
    before = len(m.snapshot().counters["gateway_requests_total"])
    for i in range(5000):
        m.observe(entry(key_id=None, status=401, requested_model=f"m{i}", model=f"m{i}", provider=None,
                        routing_strategy="rejected", error="invalid_api_key"))
    series = m.snapshot().counters["gateway_requests_total"]
    assert len(series) == before + 1  # one "unknown" series, whatever the names
    tokens = {labels for labels, _ in m.snapshot().counters["gateway_tokens_total"]}
    assert tokens == {("input", "gpt-4o-x"), ("output", "gpt-4o-x"), ("input", "unknown"), ("output", "unknown")}


def test_without_routes_labels_are_a_bounded_set() -> None:
    m = Metrics()
    for i in range(1000):
        m.observe(entry(requested_model=f"m{i}", model=f"m{i}", status=200 + (i % 3), error=f"e{i}",
                        routing_strategy="rejected" if i % 2 else "direct"))
    snap = m.snapshot()
    models = {labels[1] for labels, _ in snap.counters["gateway_requests_total"]}
    assert len(models) == 65 and "unknown" in models  # 64 learned names, then "unknown"
    reasons = {labels[0] for labels, _ in snap.counters["gateway_rejections_total"]}
    assert len(reasons) == 65 and "other" in reasons


def test_status_label_is_bounded() -> None:
    m = Metrics()
    m.observe(entry(status=700, provider="openai"))
    m.observe(entry(status=99, provider="openai"))
    series = {labels[2] for labels, _ in m.snapshot().counters["gateway_requests_total"]}
    assert series == {"other"}


def test_resilience_metrics() -> None:
    from gateway.providers.resilience import BreakerConfig, Breakers, RetryBudget, RetryBudgetConfig
    from gateway.providers.shedding import Admission, AdmissionConfig

    t = [100.0]
    breakers = Breakers(BreakerConfig(consecutive_failures=2), clock=lambda: t[0])
    breakers.get("openai/gpt-4o").failure()
    breakers.get("openai/gpt-4o").failure()
    breakers.get("azure/gpt-4o").success()
    adm = Admission(AdmissionConfig(max_in_flight=1, max_per_client=1))
    adm.try_enter("a")
    adm.try_enter("b")
    budget = RetryBudget(RetryBudgetConfig(min_retries=0), clock=lambda: t[0])
    budget.request()
    budget.try_retry()
    m = Metrics()
    observe_resilience(m, breakers, adm, {"openai": budget})
    s = parse(render(m, m.snapshot()).decode())
    assert s['gateway_deployment_state{deployment="openai/gpt-4o"}'] == 2
    assert s['gateway_deployment_state{deployment="azure/gpt-4o"}'] == 0
    assert s['gateway_deployment_ejections_total{deployment="openai/gpt-4o"}'] == 1
    assert s["gateway_in_flight"] == 1
    assert s['gateway_shed_total{reason="worker"}'] == 1 and s['gateway_shed_total{reason="client"}'] == 0
    assert s['gateway_retry_budget_refused_total{provider="openai"}'] == 1
    t[0] += 5.0  # the cooldown passed: half-open, waiting for its probe
    observe_resilience(m, breakers, None, {})
    assert parse(render(m, m.snapshot()).decode())['gateway_deployment_state{deployment="openai/gpt-4o"}'] == 1
