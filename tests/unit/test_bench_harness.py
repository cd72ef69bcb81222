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
    assert kinds == {"overhead", "throughput", "overload", "miss", "mixed", "stream"}
    assert plan.targets == [
        "direct",
        "forwarder",
        "gateway",
        "gateway-company",
        "gateway-bare",
        "gateway-compliance",
        "nginx",
    ]
    direct_rates = {lv.value for lv in plan.levels_for("direct") if lv.mode == "open"}
    assert set(plan.miss_rates + plan.mixed_rates) <= direct_rates  # every cache rate has a baseline
    assert {lv.scenario for lv in plan.levels_for("nginx")} == {"overhead", "throughput", "stream"}
    # The calibration point is measured like a peer; the company configuration like the gateway, no cache.
    assert {lv.scenario for lv in plan.levels_for("forwarder")} == {"overhead", "throughput", "stream"}
    company = {lv.scenario for lv in plan.levels_for("gateway-company")}
    assert company == {"overhead", "throughput", "overload", "stream"}
    assert plan.wrk_connections == 300 and 300 in plan.connections


def test_the_overload_level_follows_the_throughput_levels_it_takes_its_rate_from() -> None:
    levels = scenarios.full_plan().levels_for("gateway-company")
    keys = [lv.key for lv in levels]
    assert "overload@150pct" in keys
    assert keys.index("overload@150pct") > max(i for i, lv in enumerate(levels) if lv.scenario == "throughput")
    assert "overload@150pct" not in {lv.key for lv in scenarios.full_plan().levels_for("forwarder")}


def test_full_plan_has_every_peer() -> None:
    plan = scenarios.full_plan()
    peers = {"direct", "forwarder", "gateway", "gateway-company", "nginx", "litellm", "litellm-1.82.6", "portkey"}
    variants = {"gateway-bare", "gateway-no-observe", "gateway-governed", "gateway-compliance", "gateway-traced"}
    assert peers | variants | {"gateway-2w"} == set(plan.targets)
    assert plan.overhead_rates == [100, 300, 500, 1000] and plan.connections == [50, 150, 300, 1000]
    assert plan.targets.index("forwarder") == plan.targets.index("gateway") - 1  # measured minutes apart


def test_the_full_run_fits_its_time_budget() -> None:
    """`make bench` stays under about 12 minutes on 2 cores: the runner's own estimate of the plan
    (levels, warm-ups, start-ups, the past-capacity drain and the wrk runs) is under 11."""
    from benchmarks.harness.runner import Runner
    from gateway.bench.progress import Progress

    runner = Runner(scenarios.full_plan(), Path("/nonexistent"), Path("/nonexistent"), Progress())
    assert runner.total_s < 11 * 60
    quick = Runner(scenarios.quick_plan(), Path("/nonexistent"), Path("/nonexistent"), Progress())
    assert quick.total_s < 4 * 60


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
    # Searches the verifier could not judge are not phase 4 run; pairs per lookup from the verifier.
    judged = metrics.cache_figures({"gateway_cache_semantic_searches_total": 50.0,
                                    'gateway_cache_unjudged_total{phase="semantic"}': 10.0,
                                    'gateway_cache_unjudged_total{phase="near_miss"}': 3.0,
                                    "gateway_verifier_pairs_total": 100.0,
                                    'gateway_ml_seconds_total{model="embedding"}': 0.5,
                                    'gateway_ml_seconds_total{model="verifier"}': 0.3}, seconds=1.0, requests=50)
    assert judged["phase4_share"] == 0.8 and judged["phase4_unjudged"] == 10.0
    assert judged["verifier_pairs_per_lookup"] == 2.5 and judged["ml_ms_per_lookup"] == 20.0


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
    assert got["gateway RPS at 300 connections vs nginx"]["ok"] is True  # 3000 / 4500 = 0.667
    assert got["gateway RPS at 300 connections vs litellm"]["ok"] is None  # not installed
    assert got["gateway overhead p50 at 500 RPS"]["ok"] is True
    assert got["miss p50 overhead at 50 RPS"]["ok"] is True
    assert got["mixed p50 vs direct at 500 RPS"]["ok"] is True  # 15 / 60.2
    assert got["cache hit p50 at 500 RPS"]["ok"] is True
    assert got["gateway peak RSS per worker"]["ok"] is True
    # No company configuration, forwarder or Portkey in this run: those targets are n/a, not failed.
    assert got["gateway-company RPS at 300 connections vs portkey"]["ok"] is None
    assert got["gateway CPU ms/request vs forwarder at 300 connections"]["ok"] is None


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


def _cpu_level(
    scenario: str, mode: str, value: int, p50: float, p99: float, cpu: float, **extra: Any
) -> dict[str, Any]:
    level = _level(scenario, mode, value, p50, p99, **extra)
    level["resources"] = {**level["resources"], "cpu_s_per_1k": cpu}
    return level


def _company_doc(shed: dict[str, Any] | None = None, unanswered: int = 0) -> dict[str, Any]:
    """A run with the forwarder, the company configuration and Portkey beside _doc()'s targets."""
    doc = _doc()
    doc["targets"]["direct"]["levels"].append(_level("overhead", "open", 100, 60.1, 61.0))

    def target(rps300: float, cpu300: float, p50_over: float, p99_over: float, **more: Any) -> dict[str, Any]:
        levels = [
            _cpu_level("overhead", "open", 100, 60.1 + p50_over, 61.0 + p99_over, cpu300 * 1.5),
            _cpu_level("overhead", "open", 500, 60.2 + p50_over, 61.0 + p99_over, cpu300 * 1.2),
            _cpu_level("throughput", "closed", 300, 70.0, 90.0, cpu300, rps=rps300),
            _cpu_level("throughput", "closed", 1000, 300.0, 900.0, cpu300, rps=rps300),
        ]
        return {"status": "ok", "pinned": True, "workers": 1, "label": "x", "levels": levels, **more}

    for lv in doc["targets"]["gateway"]["levels"]:
        if lv["key"] == "throughput@300conn":
            lv["resources"]["cpu_s_per_1k"] = 0.30
    doc["targets"]["forwarder"] = target(1500.0, 0.60, 1.5, 6.0, wrk={"connections": 300, "rps": 1480.0,
                                                                       "errors": 0, "latency_ms": _lat(70.0, 95.0),
                                                                       "cpu_ms_per_request": 0.62})
    company = target(2600.0, 0.45, 0.8, 4.0)
    overload = _level("overload", "open", 150, 70.0, 120.0, rate=3900, capacity_rps=2600.0)
    overload["key"] = "overload@150pct"
    overload.update(requests=15600, ok=12000, errors=3600 + unanswered, success_rate=0.77)
    overload["error_kinds"] = {"status": 3600, **({"timeout": unanswered} if unanswered else {})}
    overload["shed"] = shed if shed is not None else {"count": 3600, "with_retry_after": 3600, "latency_ms": _lat(2, 4)}
    overload["answered_latency_ms"] = _lat(65.0, 118.0)
    company["levels"].append(overload)
    doc["targets"]["gateway-company"] = company
    doc["targets"]["portkey"] = target(300.0, 3.2, 4.5, 81.0)
    return doc


def test_headline_puts_cpu_and_rps_beside_the_forwarders_from_the_same_run() -> None:
    doc = _company_doc()
    results.add_overheads(doc)
    rows = {h["target"]: h for h in results.headline(doc)}
    company = rows["gateway-company"]
    assert company["rps"] == 2600.0 and company["cpu_ms_per_request"] == 0.45
    assert company["cpu_vs_forwarder"] == 0.75 and company["rps_vs_forwarder"] == pytest.approx(1.733)
    assert company["overhead_100"]["p50"] == pytest.approx(0.8) and company["overhead_500"]["p99"] == pytest.approx(4.0)
    assert rows["forwarder"]["cpu_vs_forwarder"] == 1.0
    assert rows["direct"]["cpu_ms_per_request"] is None  # nothing of ours runs there
    assert rows["litellm"]["status"].startswith("not installed") and rows["litellm"]["rps"] is None
    ratios = results.ratios(doc)
    assert "direct" not in ratios["targets"] and "litellm" not in ratios["targets"]  # no figures, no ratio
    assert ratios["cpu"]["gateway-company"]["portkey"] == pytest.approx(0.45 / 3.2, abs=1e-3)
    assert ratios["rps"]["gateway-company"]["nginx"] == pytest.approx(2600 / 4500, abs=1e-3)
    assert ratios["rps"]["portkey"]["gateway-company"] == pytest.approx(300 / 2600, abs=1e-3)
    assert set(ratios["cpu"]["nginx"].values()) == {None}  # no CPU figure for nginx in this run: no ratio


def test_the_company_targets_are_checked_against_the_forwarder_and_portkey() -> None:
    doc = _company_doc()
    results.add_overheads(doc)
    got = {c["check"]: c for c in results.checks(doc)}
    assert got["gateway-company CPU ms/request vs forwarder at 300 connections"]["measured"] == "0.75x"
    assert got["gateway-company CPU ms/request vs forwarder at 300 connections"]["ok"] is True  # <= 0.8x
    assert got["gateway CPU ms/request vs forwarder at 300 connections"]["ok"] is True  # 0.30 / 0.60 = 0.5
    assert got["gateway-company overhead p50 at 100 RPS"]["ok"] is True
    assert got["gateway-company overhead p99 at 500 RPS"]["ok"] is True  # 4.0 <= 5
    assert got["gateway-company RPS at 300 connections vs portkey"]["measured"] == "8.667x"
    assert got["gateway-company RPS at 300 connections vs portkey"]["ok"] is True
    assert got["gateway-company errors at 1000 connections"]["ok"] is True
    shed = got["gateway-company past capacity (3,900 RPS) sheds fast"]
    assert shed["ok"] is True and "3,600 shed (3,600 with retry-after)" in shed["measured"]
    doc = _company_doc()
    doc["targets"]["portkey"]["levels"][2]["rps"] = 400.0  # 6.5x
    doc["targets"]["gateway-company"]["levels"][1]["latency_ms"]["p99"] = 70.0  # +9 ms over direct
    results.add_overheads(doc)
    got = {c["check"]: c for c in results.checks(doc)}
    assert got["gateway-company RPS at 300 connections vs portkey"]["ok"] is False
    assert got["gateway-company overhead p99 at 500 RPS"]["ok"] is False


def test_past_capacity_is_met_only_by_fast_sheds_that_say_when_to_come_back() -> None:
    level = _company_doc()["targets"]["gateway-company"]["levels"][-1]
    fig = results.overload_figures(level)
    assert (fig["served"], fig["shed"], fig["unanswered"], fig["other_errors"]) == (12000, 3600, 0, 0)
    assert results.sheds_fast(fig) is True
    no_header = _company_doc(shed={"count": 3600, "with_retry_after": 10, "latency_ms": _lat(2, 4)})
    assert results.sheds_fast(results.overload_figures(no_header["targets"]["gateway-company"]["levels"][-1])) is False
    queued = _company_doc(unanswered=40)  # requests that waited past the timeout: queueing, not shedding
    assert results.sheds_fast(results.overload_figures(queued["targets"]["gateway-company"]["levels"][-1])) is False
    slow = dict(level, answered_latency_ms=_lat(900.0, 2500.0))
    assert results.sheds_fast(results.overload_figures(slow)) is False


def test_markdown_leads_with_the_headline_ratios_and_targets() -> None:
    doc = _company_doc()
    results.add_overheads(doc)
    doc["checks"] = results.checks(doc)
    md = tables.render(doc, {})
    order = [md.index(h) for h in ("## Headline", "## Targets", "## Ratios", "## Overhead", "## Throughput")]
    assert order == sorted(order)
    headline = md.split("## Headline", 1)[1].split("## Targets", 1)[0]
    assert "| **gateway-company** | 2,600 | – | 0.450 | 0.75x | 1.73x | +0.80 / +4.0 | +0.80 / +4.0 |" in headline
    assert "| **forwarder** | 1,500 | 1,480 | 0.600 | 1.00x | 1.00x |" in headline
    ratios = md.split("## Ratios", 1)[1].split("## Overhead", 1)[0]
    assert "| row ÷ column | gateway | nginx | forwarder | gateway-company | portkey |" in ratios
    wrk_section = md.split("## Cross-check with wrk (300 connections)", 1)[1].split("## Past capacity", 1)[0]
    assert "| **forwarder** | 1,500 · 70.0 / 90.0 | 1,480 · 70.0 / 95.0 · 0 | 0.99x | 0.600 | 0.620 |" in wrk_section
    past = md.split("## Past capacity", 1)[1].split("## CPU ms per request", 1)[0]
    assert "3,900 RPS (150% of 2,600)" in past and "| yes |" in past
    cpu = md.split("## CPU ms per request at every level", 1)[1].split("## Cache modes", 1)[0]
    assert "| target | 100rps | 500rps | 1000rps | 300conn | 1000conn |" in cpu
    assert "| **gateway-company** | 0.675 | 0.540 | – | 0.450 | 0.450 |" in cpu
    throughput = md.split("## Throughput", 1)[1].split("## Cross-check", 1)[0]
    assert "2,600 · 0.450 · 70.0 / 90.0 · 0" in throughput  # CPU ms per request beside RPS
    assert "Disturbed run" not in md


def test_a_headline_level_run_beside_other_load_is_flagged() -> None:
    doc = _company_doc()
    results.add_overheads(doc)
    doc["checks"] = results.checks(doc)
    assert results.disturbed(doc) == {}
    doc["targets"]["gateway-company"]["levels"][2]["resources"]["other_cpu"] = 1.4  # its 300-connection level
    doc["targets"]["portkey"]["levels"][3]["resources"]["other_cpu"] = 1.9  # 1,000 connections: not a headline level
    assert results.disturbed(doc) == {"gateway-company": 1.4}
    headline = tables.render(doc, {}).split("## Headline", 1)[1].split("## Targets", 1)[0]
    assert "**Disturbed run**" in headline and "gateway-company 1.40" in headline and "portkey" not in headline.split(
        "| target |"
    )[0]


def test_a_subset_with_the_gateway_measures_the_forwarder_right_before_it() -> None:
    assert cli.with_calibration(["direct", "gateway", "nginx"]) == ["direct", "forwarder", "gateway", "nginx"]
    assert cli.with_calibration(["gateway-company"]) == ["forwarder", "gateway-company"]
    assert cli.with_calibration(["gateway", "forwarder"]) == ["gateway", "forwarder"]  # placed by the caller
    assert cli.with_calibration(["direct", "nginx"]) == ["direct", "nginx"]  # no gateway: nothing to calibrate


def test_chosen_scenarios_run_alone_without_the_calibration_target() -> None:
    plan = scenarios.full_plan()
    cli.narrow(plan, "gateway-company", "throughput,overload")
    assert plan.targets == ["gateway-company"] and plan.wrk_connections == 0
    keys = [lv.key for lv in plan.levels_for("gateway-company")]
    # The overload level still follows the throughput levels it takes its rate from.
    assert keys == ["throughput@50conn", "throughput@150conn", "throughput@300conn", "throughput@1000conn",
                    "overload@150pct"]
    assert [lv.scenario for lv in plan.levels_for("nginx")] == ["throughput"] * 4
    with pytest.raises(ValueError, match="unknown scenarios"):
        cli.narrow(scenarios.full_plan(), None, "throughput,overlaod")
    untouched = scenarios.full_plan()
    cli.narrow(untouched, "gateway-company", None)
    assert untouched.targets == ["forwarder", "gateway-company"] and not untouched.only
