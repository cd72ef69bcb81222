"""Across processes: /metrics summed over 2 workers, one audit query over 2 instances sharing Redis, and the
dashboard rendered by headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cdp import chromium_page
from tests.e2e.conftest import MASTER_KEY, Proc
from tests.e2e.conftest_observe import (
    admin_get,
    all_entries,
    chat,
    metric_sum,
    scrape,
    start_observed,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def burst(gw: Proc, n: int, tag: str) -> list[str]:
    """n requests on n fresh connections at once, so both workers' accept loops get some."""
    with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
        return list(pool.map(lambda i: chat(gw, f"{tag} {i}"), range(n)))


def spread_over_workers(gw: Proc, tag: str, n: int = 24, tries: int = 5) -> list[str]:
    """Send bursts until entries from two different worker processes are in the log."""
    ids: list[str] = []
    for attempt in range(tries):
        ids = ids + burst(gw, n, f"{tag}-{attempt}")
        pids = {e["pid"] for e in wait_for(partial(_entries_for, gw, ids), what="burst entries")}
        if len(pids) >= 2:
            return ids
    raise AssertionError("every request landed on one worker")


def _entries_for(gw: Proc, ids: list[str]) -> list[dict[str, object]] | None:
    got = [e for e in all_entries(gw, model="gpt-4o-mini") if e["request_id"] in set(ids)]
    return got if len(got) == len(ids) else None


@pytest.fixture(scope="module")
def pod_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("observe-pod")


@pytest.fixture(scope="module")
def pod(pod_dir: Path, mock_upstream: Proc, slow_upstream: Proc) -> Iterator[Proc]:
    p = start_observed(pod_dir, "pod", mock_upstream, slow_upstream,
                       observe={"metrics_dump_interval_s": 0.2})
    yield p
    p.stop()


def test_metrics_totals_match_requests_across_two_workers(pod: Proc) -> None:
    before = scrape(pod)
    base = metric_sum(before, "gateway_requests_total")
    ids = spread_over_workers(pod, "metrics")
    n = len(ids)

    def settled() -> str | None:
        text = scrape(pod)
        return text if metric_sum(text, "gateway_requests_total") - base == n else None

    text = wait_for(settled, timeout=10, what=f"{n} more requests in /metrics")
    assert metric_sum(text, "gateway_workers") == 2
    assert metric_sum(text, "gateway_requests_total", model="gpt-4o-mini", status="200") - metric_sum(
        before, "gateway_requests_total", model="gpt-4o-mini", status="200") == n
    assert metric_sum(text, "gateway_request_duration_seconds_count") - metric_sum(
        before, "gateway_request_duration_seconds_count") == n
    assert metric_sum(text, "gateway_overhead_seconds_count") == metric_sum(
        text, "gateway_request_duration_seconds_count")
    assert metric_sum(text, "gateway_upstream_duration_seconds_count", provider="primary") >= n
    assert metric_sum(text, "gateway_tokens_total", kind="input") > 0
    assert metric_sum(text, "gateway_observe_dropped_total") == 0
    assert 'gateway_pool_connections{provider="primary",state="idle"}' in text
    assert re.search(r'^gateway_request_duration_seconds_bucket\{endpoint="chat",le="\+Inf"\} \d+$', text, re.M)
    # The OpenTelemetry GenAI histograms, fed by the same entries, summed the same way.
    assert metric_sum(text, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="gpt-4o-mini") - \
        metric_sum(before, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="gpt-4o-mini") == n
    assert metric_sum(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") > 0


def test_two_instances_sharing_redis_answer_one_query(pod_dir: Path, mock_upstream: Proc, slow_upstream: Proc,
                                                      redis_url: str) -> None:
    a = start_observed(pod_dir, "inst-a", mock_upstream, slow_upstream, redis_url=redis_url)
    b = start_observed(pod_dir, "inst-b", mock_upstream, slow_upstream, redis_url=redis_url)
    try:
        ids_a = spread_over_workers(a, "inst-a")
        ids_b = spread_over_workers(b, "inst-b")
        for gw in (a, b):  # either instance sees every entry
            got = {e["request_id"]: e for e in all_entries(gw)}
            assert set(ids_a) | set(ids_b) <= set(got)
            pids = {got[i]["pid"] for i in ids_a} | {got[i]["pid"] for i in ids_b}
            assert len(pids) >= 4  # two workers of each instance
        page = admin_get(a, "/api/vas/logs", limit=10)
        assert page["count"] == 10 and page["next_cursor"] is not None
    finally:
        a.stop()
        b.stop()


def test_dashboard_in_headless_chromium(pod: Proc, pod_dir: Path) -> None:
    """Log in once through the page's form; the key is never in the URL, the history or page script."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    burst(pod, 8, "dashboard")
    wait_for(lambda: admin_get(pod, "/api/vas/summary")["summary"]["requests"] >= 8, what="a summary with the burst")
    profile = tempfile.mkdtemp(prefix="chromium-", dir=pod_dir)
    shot = pod_dir / "dashboard.png"
    dom, seen = asyncio.run(_log_in_and_read(chromium, profile, f"{pod.url}/dashboard?poll_ms=500"))
    shot.write_bytes(seen["screenshot"])
    assert seen["before_login"] == {"login": "on", "updated": None}  # the page alone shows no data
    assert MASTER_KEY not in seen["url"] + seen["history"] + seen["script_cookies"] + seen["storage"]
    for cookie in seen["cookies"]:  # the session cookie, where the gateway has sessions
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/api/vas"
        assert MASTER_KEY not in cookie["value"]
    latest = admin_get(pod, "/api/vas/summary")
    s = latest["summary"]
    assert _text(dom, "requests") == f"{s['requests']:,}"
    assert _text(dom, "hit-ratio") == f"{100 * s['hit_ratio']:.1f}%"
    shown_p50 = _text(dom, "overhead-p50")
    assert shown_p50.endswith(" ms")
    assert float(shown_p50[:-3]) == pytest.approx(s["latency_ms"]["overhead"]["p50"], abs=0.051)
    for phase in ("intent", "near_miss", "exact", "semantic"):
        assert f'data-phase="{phase}"' in dom
    shown = re.findall(r'<tr data-request-id="([^"]+)"', dom)
    assert shown and set(shown) <= {e["request_id"] for e in all_entries(pod)}
    assert 'id="latency-overhead"' in dom and 'id="latency-ttfb"' in dom
    assert shot.stat().st_size > 10_000
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, REPO / "docs" / "dashboard.png")
    assert seen["wrong_key"] == "wrong key"


def test_dashboard_refuses_a_key_in_the_url(pod: Proc) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{pod.url}/dashboard?key={MASTER_KEY}", timeout=10)
    assert exc.value.code == 400
    assert json.loads(exc.value.read())["error"]["param"] == "key"


async def _log_in_and_read(chromium: str, profile: str, url: str) -> tuple[str, dict[str, Any]]:
    seen: dict[str, Any] = {}
    async with asyncio.timeout(60), chromium_page(chromium, profile) as page:
        await page.send("Page.enable")
        await page.send("Network.enable")
        await page.send("Page.navigate", url=url)
        await page.until("document.getElementById('login')?.className === 'on'")
        seen["before_login"] = await page.js(
            "({login: document.getElementById('login').className, updated: document.body.dataset.updated ?? null})")
        await page.js("document.getElementById('login-key').value = 'sk-wrong';"
                      "document.getElementById('login-form').requestSubmit(); true")
        seen["wrong_key"] = await page.until("document.getElementById('login-error').textContent")
        await page.js(f"document.getElementById('login-key').value = {json.dumps(MASTER_KEY)};"
                      "document.getElementById('login-form').requestSubmit(); true")
        await page.until("document.body.dataset.updated")
        await page.until("document.querySelectorAll('#latest tbody tr').length > 0")
        seen["url"] = await page.js("location.href")
        seen["history"] = json.dumps(await page.send("Page.getNavigationHistory"))
        seen["script_cookies"] = await page.js("document.cookie")
        seen["storage"] = await page.js("JSON.stringify([localStorage, sessionStorage])")
        cookies = (await page.send("Network.getCookies", urls=[url.split("/dashboard")[0] + "/api/vas/summary"]))
        seen["cookies"] = cookies["cookies"]
        seen["screenshot"] = await page.screenshot()
        dom = await page.js("document.documentElement.outerHTML")
    return str(dom), seen


def _text(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m, f"#{element_id} not in the page"
    return m.group(1)
