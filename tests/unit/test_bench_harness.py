"""The `make bench` harness: scenarios, /metrics reading, overheads, targets checked, files written."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.harness import __main__ as cli  # noqa: E402
from benchmarks.harness import metrics, results, scenarios, tables  # noqa: E402


def _lat(p50: float, p99: float) -> dict[str, float]:
    return {"count": 100, "p50": p50, "p90": p99, "p95": p99, "p99": p99, "max": p99 + 1, "mean": p50}


def _level(scenario: str, mode: str, value: int, p50: float, p99: float, **extra: Any) -> dict[str, Any]:
    unit = "rps" if mode == "open" else "conn"
    return {
        "key": f"{scenario}@{value}{unit}",
        "scenario": scenario,
        "mode": mode,
        "value": value,
        "requests": 100,
        "ok": 100,
        "errors": 0,
        "success_rate": 1.0,
        "rps": extra.pop("rps", float(value)),
        "latency_ms": _lat(p50, p99),
        "ttfb_ms": _lat(p50 / 2, p99 / 2),
        "hits": 0,
        "hit_rate": 0.0,
        "driver": {"cpu_util": 0.1, "max_schedule_lag_ms": 0.5},
        "resources": {"mock_cpu_util": 0.2, "cpu_util": 0.5, "cpu_s": 1.0, "requests_total": 100},
        **extra,
    }


def _doc() -> dict[str, Any]:
    direct = [
        _level("overhead", "open", 500, 60.2, 61.0),
        _level("miss", "open", 50, 60.1, 60.5),
        _level("stream", "open", 100, 160.0, 170.0),
        _level("throughput", "closed", 300, 64.0, 70.0, rps=4600.0),
    ]
    gateway = [
        _level("overhead", "open", 500, 60.9, 66.0),
        _level("miss", "open", 50, 75.0, 80.0),
        _level("mixed", "open", 500, 15.0, 62.0, hits=50, hit_rate=0.5, hit_latency_ms=_lat(0.6, 0.9)),
        _level("stream", "open", 100, 161.0, 171.0),
        _level("throughput", "closed", 300, 65.0, 90.0, rps=3000.0),
        _level("throughput", "closed", 1000, 300.0, 900.0, rps=3000.0),
        {"key": "overhead@1000rps", "scenario": "overhead", "mode": "open", "value": 1000, "skipped": "x"},
    ]
    return {
        "started": "2026-01-02T03:04:05+00:00",
        "plan": "quick",
        "standin": False,
        "machine": {
            "host": "box",
            "cpu": "cpu",
            "cores": 2,
            "memory_gb": 24,
            "kernel": "6",
            "python": "3.11",
        },
        "placement": {"target_cores": "0", "driver_and_mock_cores": "1"},
        "settings": {"level_s": 1, "warmup_s": 0.5, "mock_latency_ms": 60, "stream_chunks": 50},
        "versions": {"gateway": "0.1.0", "nginx": "1.22"},
        "targets": {
            "direct": {"status": "ok", "levels": direct},
            "gateway": {
                "status": "ok",
                "pinned": True,
                "workers": 1,
                "levels": gateway,
                "peak_rss_mb": 150.0,
                "peak_rss_process_mb": 120.0,
                "cpu_s_per_1k": 0.2,
            },
            "nginx": {
                "status": "ok",
                "pinned": True,
                "workers": 1,
                "peak_rss_mb": 20.0,
                "levels": [_level("throughput", "closed", 300, 64.5, 72.0, rps=4500.0)],
            },
            "litellm": {"status": "not installed — run make bench-peers", "levels": []},
        },
    }


def test_quick_plan_covers_every_scenario_for_the_gateway() -> None:
    plan = scenarios.quick_plan()
    kinds = {lv.scenario for lv in plan.levels_for("gateway")}
    assert kinds == {"overhead", "throughput", "miss", "mixed", "stream"}
    assert plan.targets == ["direct", "gateway", "gateway-bare", "gateway-compliance", "nginx"]
    direct_rates = {lv.value for lv in plan.levels_for("direct") if lv.mode == "open"}
    assert set(plan.miss_rates + plan.mixed_rates) <= direct_rates  # every cache rate has a baseline
    assert {lv.scenario for lv in plan.levels_for("nginx")} == {"overhead", "throughput", "stream"}


def test_full_plan_has_every_peer() -> None:
    plan = scenarios.full_plan()
    peers = {"direct", "gateway", "nginx", "litellm", "litellm-1.82.6", "portkey", "gateway-2w"}
    variants = {"gateway-bare", "gateway-no-observe", "gateway-governed", "gateway-compliance"}
    assert peers | variants == set(plan.targets)
    assert plan.overhead_rates == [100, 300, 500, 1000] and plan.connections == [50, 150, 300, 1000]


def test_bodies_are_unique_and_only_cache_modes_are_cacheable() -> None:
    def filled(template: bytes) -> dict[str, Any]:
        return json.loads(template.replace(b"{ID}", b"1").replace(b"{WORDS}", b"a b c d e f"))

    passthrough = filled(scenarios.passthrough_body())
    # What an application sends: a system line, a question of a few dozen words, hundreds of tokens.
    system, user = passthrough["messages"]
    assert system["role"] == "system" and "\n" not in system["content"] and system["content"]
    assert user["role"] == "user" and 25 <= len(user["content"].split()) <= 40
    assert passthrough["max_tokens"] == 256
    assert passthrough["temperature"] == 0.2  # above 0: the cache (temperature 0 only) never answers
    assert b"{ID}" in scenarios.passthrough_body() and b"{WORDS}" in scenarios.passthrough_body()
    streamed = filled(scenarios.stream_body())
    assert streamed["stream"] is True and streamed["messages"] == passthrough["messages"]
    assert streamed["temperature"] == 0.2
    assert filled(scenarios.cache_body())["temperature"] == 0
    for level in (scenarios.Level("overhead", "open", 100), scenarios.Level("throughput", "closed", 300)):
        assert scenarios.body_for(level, "n1")[0] == scenarios.passthrough_body()
    _template, repeat, pct = scenarios.body_for(scenarios.Level("mixed", "open", 100), "n1")
    assert pct == 50 and repeat is not None and b"{ID}" not in repeat and b"n1" in repeat


def test_metrics_parse_and_cache_figures() -> None:
    before = metrics.parse(
        '# HELP x\ngateway_cache_lookups_total{phase="4"} 10\ngateway_embeddings_total 5\ngateway_requests_total 100\n'
    )
    after = metrics.parse(
        'gateway_cache_lookups_total{phase="4"} 40\n'
        "gateway_embeddings_total 35\n"
        "gateway_requests_total 200\n"
        'gateway_embed_skipped_total{reason="saturated"} 7\n'
    )
    delta = metrics.deltas(before, after)
    assert delta == {
        'gateway_cache_lookups_total{phase="4"}': 30.0,
        "gateway_embeddings_total": 30.0,
        'gateway_embed_skipped_total{reason="saturated"}': 7.0,
    }
    figures = metrics.cache_figures(delta, seconds=2.0, requests=60)
    assert figures["embeddings_per_s"] == 15.0
    assert figures["phase4_share"] == 0.5
    assert figures["embeddings_skipped"] == 7.0
    assert metrics.deltas(None, after) == {}
    assert metrics.cache_figures({}, 1.0, 10) == {}


def test_overheads_are_taken_against_direct_at_the_same_rate() -> None:
    doc = _doc()
    results.add_overheads(doc)
    levels = {lv["key"]: lv for lv in doc["targets"]["gateway"]["levels"]}
    assert levels["overhead@500rps"]["overhead_ms"]["p50"] == pytest.approx(0.7)
    assert levels["overhead@500rps"]["overhead_ms"]["p99"] == pytest.approx(5.0)
    assert levels["miss@50rps"]["overhead_ms"]["p50"] == pytest.approx(14.9)
    assert levels["mixed@500rps"]["baseline_latency_ms"]["p50"] == 60.2
    assert levels["stream@100rps"]["ttfb_overhead_ms"]["p50"] == pytest.approx(0.5)
    assert "overhead_ms" not in levels["throughput@300conn"]


def test_checks_follow_the_issue_targets() -> None:
    doc = _doc()
    results.add_overheads(doc)
    got = {c["check"]: c for c in results.checks(doc)}
    assert got["RPS at 300 connections vs nginx"]["ok"] is True  # 3000 / 4500 = 0.667
    assert got["RPS at 300 connections vs litellm"]["ok"] is None  # not installed
    assert got["overhead p50 at 500 RPS"]["ok"] is True
    assert got["miss p50 overhead at 50 RPS"]["ok"] is True
    assert got["mixed p50 vs direct at 500 RPS"]["ok"] is True  # 15 / 60.2
    assert got["cache hit p50 at 500 RPS"]["ok"] is True
    assert got["peak RSS per worker"]["ok"] is True


def test_markdown_has_every_section_and_reports_missing_peers() -> None:
    doc = _doc()
    results.add_overheads(doc)
    doc["checks"] = results.checks(doc)
    md = tables.render(doc, {"memory": "latest-memory.png"})
    for heading in (
        "## Overhead",
        "## Throughput",
        "## Cache modes",
        "## Streaming",
        "## Resources",
        "## The rig",
        "## Targets",
        "![memory](latest-memory.png)",
    ):
        assert heading in md
    assert "not installed — run make bench-peers" in md
    assert "+0.70 / +5.0" in md


def test_publish_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    paths = cli.publish(_doc(), tmp_path)
    assert paths["json"] == tmp_path / "2026-01-02-box.json"
    saved = json.loads(paths["json"].read_text())
    assert saved["checks"] and saved["targets"]["gateway"]["levels"][0]["overhead_ms"]
    assert "latest-overhead.png" in (tmp_path / "latest.md").read_text()
    assert "2026-01-02-box-overhead.png" in (tmp_path / "2026-01-02-box.md").read_text()
    for kind in ("overhead", "throughput", "memory"):
        assert (tmp_path / f"2026-01-02-box-{kind}.png").stat().st_size > 1000
        assert (tmp_path / f"latest-{kind}.png").exists()


def test_profile_summary_ranks_leaf_frames_and_our_functions() -> None:
    from benchmarks.harness import profile

    collapsed = (
        "process 1;MainThread;main (gateway/cli.py:10);handle (gateway/pipeline.py:5);post (aiohttp/client.py:9) 30\n"
        "process 1;MainThread;main (gateway/cli.py:10);handle (gateway/pipeline.py:7) 10\n"
        "process 1;MainThread;MPServer._spawn_rsgi_worker (granian/server/mp.py:295) 60\n"
        "garbage line\n"
    )
    summary = profile.summarize(collapsed)
    assert summary["samples"] == 100
    assert summary["self"][0] == ["granian native loop: Rust I/O or idle (granian/server/mp.py)", 0.6]
    assert ["post (aiohttp/client.py)", 0.3] in summary["self"]
    assert all("gateway/cli.py" not in frame for frame, _ in summary["inclusive_gateway"])  # the launcher
    assert ["handle (gateway/pipeline.py)", 0.4] in summary["inclusive_gateway"]
    assert profile.summarize("") == {"samples": 0}
