"""Audit log, query API, archive and CLI through the official SDKs against real Granian workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import API_KEY, MASTER_KEY, Proc
from tests.e2e.conftest_observe import (
    admin_get,
    all_entries,
    anthropic_client,
    chat,
    entry_for,
    openai_client,
    start_observed,
    wait_for,
)


@pytest.fixture(scope="module")
def obs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("observe")


@pytest.fixture(scope="module")
def gw(obs_dir: Path, mock_upstream: Proc, slow_upstream: Proc) -> Iterator[Proc]:
    p = start_observed(obs_dir, "main", mock_upstream, slow_upstream, archive={"enabled": True})
    yield p
    p.stop()


def test_miss_entry_carries_the_seed_fields(gw: Proc) -> None:
    rid = chat(gw, "what is a gateway?")
    e = entry_for(gw, rid)
    assert e["metacache"] == {"hit": False, "query": None, "tokens_saved": 0, "phase": 0, "tier": None,
                              "similarity": None}
    assert (e["routing_strategy"], e["routing_reason"]) == ("direct", "provider:primary")
    assert e["model"] == "gpt-4o-mini" and e["requested_model"] == "gpt-4o-mini"
    assert e["provider"] == "primary" and e["deployment"] == "gpt-4o-mini"
    assert e["key_id"] == "team-a" and e["status"] == 200 and e["endpoint"] == "chat"
    assert e["tokens_in"] > 0 and e["tokens_out"] > 0
    # The mock answers after 5 ms: the provider's share and the gateway's add up to the first byte.
    assert e["upstream_ms"] >= 5.0
    assert e["ttfb_ms"] == pytest.approx(e["upstream_ms"] + e["overhead_ms"], abs=0.01)
    assert e["latency_ms"] >= e["ttfb_ms"]
    assert API_KEY not in str(e) and "sk-upstream-secret" not in str(e)


def test_deployment_model_and_stream_entry(gw: Proc) -> None:
    with openai_client(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "stream please"}], stream=True,
            stream_options={"include_usage": True})
        rid = raw.headers["x-gateway-request-id"]
        chunks = list(raw.parse())
    assert chunks
    e = entry_for(gw, rid)
    assert e["stream"] is True and e["requested_model"] == "gpt-4o"
    assert e["model"] == e["deployment"] == "gpt-4o-2024-08-06"  # the seed: from the provider on a miss
    assert e["provider"] == "openai" and e["tokens_out"] > 0
    assert e["latency_ms"] >= e["ttfb_ms"] > 0


def test_anthropic_sdk_entry(gw: Proc) -> None:
    with anthropic_client(gw) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-house", max_tokens=50, messages=[{"role": "user", "content": "hi claude"}])
        raw.parse()
        rid = raw.headers["x-gateway-request-id"]
    e = entry_for(gw, rid)
    assert e["endpoint"] == "messages" and e["provider"] == "claude"
    assert e["routing_reason"] == "provider:claude" and e["tokens_in"] > 0 and e["tokens_out"] > 0


def test_error_entry(gw: Proc) -> None:
    with openai_client(gw) as client, pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "boom"}],
                                       extra_body={"mock": {"status": 500}})
    rid = exc.value.response.headers["x-gateway-request-id"]
    e = entry_for(gw, rid)
    assert e["status"] == 500 and e["routing_strategy"] == "direct"
    assert e["attempts"] == 2  # one retry configured
    assert e["ttfb_ms"] is None and e["tokens_in"] == 0


def test_rejected_entry_has_no_key(gw: Proc) -> None:
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong-key-123456", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    e = entry_for(gw, exc.value.response.headers["x-gateway-request-id"])
    assert e["status"] == 401 and e["key_id"] is None and e["routing_strategy"] == "rejected"
    assert "sk-wrong" not in str(e)


def test_fallback_entry(gw: Proc) -> None:
    rid = chat(gw, "fall back please", model="flaky")
    e = entry_for(gw, rid)
    assert e["fallback"] is True and e["routing_strategy"] == "fallback"
    assert e["routing_reason"] == "fallback:primary" and e["provider"] == "primary"
    assert e["requested_model"] == "flaky" and e["model"] == "gpt-4o-mini"
    assert e["attempts"] == 2  # the dead deployment once, then the fallback at once (no retry first)
    assert e["status"] == 200


def test_query_filters_and_pagination(gw: Proc) -> None:
    t0 = time.time()
    ids = [chat(gw, f"page {i}") for i in range(7)]
    wait_for(lambda: len(all_entries(gw, **{"from": t0, "model": "gpt-4o-mini"})) >= 7, what="7 entries")
    t1 = time.time()
    window = {"from": t0, "to": t1}
    got = all_entries(gw, **window)
    assert {e["request_id"] for e in got} >= set(ids)
    # Pages of 3, newest first, no entry twice, the same set as one big page.
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        page = admin_get(gw, "/api/vas/logs", limit=3, cursor=cursor, **window)
        assert page["count"] == len(page["data"]) <= 3
        seen += [e["request_id"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(got) and pages >= 3
    assert set(seen) == {e["request_id"] for e in got}
    # Filters.
    assert all(e["key_id"] == "team-a" for e in all_entries(gw, key="team-a", **window))
    assert all_entries(gw, key="nobody", **window) == []
    assert all(not e["metacache"]["hit"] for e in all_entries(gw, cache_hit="false", **window))
    assert all(e["status"] >= 500 for e in all_entries(gw, status="5xx"))
    assert {e["request_id"] for e in all_entries(gw, status="200", **window)} >= set(ids)
    assert all(e["requested_model"] == "claude-house" for e in all_entries(gw, model="claude-house"))
    assert all_entries(gw, **{"from": t1 + 3600}) == []


def test_query_api_needs_the_master_key(gw: Proc) -> None:
    for headers in ({}, {"authorization": f"Bearer {API_KEY}"}):
        req = urllib.request.Request(gw.url + "/api/vas/logs", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=5)
        exc.value.close()
        assert exc.value.code == 401
    req = urllib.request.Request(gw.url + "/api/vas/logs?cache_hit=perhaps",
                                 headers={"authorization": f"Bearer {MASTER_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    exc.value.close()
    assert exc.value.code == 400


def test_archive_keeps_full_exchange_redacted(gw: Proc) -> None:
    secret = "sk-proj-THISISASECRETKEY123"
    rid = chat(gw, f"my key is {secret}, keep it safe")
    record = wait_for(lambda: _archived(gw, rid), what="the archive record")
    assert record["request_headers"]["authorization"] == "[redacted]"
    assert record["request"]["messages"][0]["content"] == "my key is sk-[redacted], keep it safe"
    assert record["response"]["choices"][0]["message"]["content"].startswith("This is a mock answer")
    assert record["audit"]["request_id"] == rid
    assert secret not in str(record) and API_KEY not in str(record)
    # A streamed answer is archived as its events.
    with openai_client(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream to archive"}], stream=True)
        list(raw.parse())
        srid = raw.headers["x-gateway-request-id"]
    srec = wait_for(lambda: _archived(gw, srid), what="the streamed archive record")
    assert srec["stream"] is True and isinstance(srec["response"], list) and len(srec["response"]) > 2


def _archived(gw: Proc, rid: str) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = admin_get(gw, "/api/vas/archive", request_id=rid)
        return record
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return None
        raise


def test_events_cli(gw: Proc, obs_dir: Path) -> None:
    rid = chat(gw, "for the cli")
    entry_for(gw, rid)
    env = {**os.environ, "GATEWAY_MASTER_KEY": MASTER_KEY}
    cli = [sys.executable, "-m", "gateway.cli", "events"]
    tail = subprocess.run([*cli, "tail", "--path", str(obs_dir / "main" / "audit.db"), "-n", "50",
                           "--format", "json", "--duration", "0.5"], capture_output=True, text=True, env=env,
                          timeout=30)
    assert tail.returncode == 0, tail.stderr
    assert any(rid in line for line in tail.stdout.splitlines())
    table = subprocess.run([*cli, "tail", "--url", gw.url, "-n", "5", "--duration", "0.5"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["time", "request", "key"]
    stats = subprocess.run([*cli, "stats", "--url", gw.url, "--last", "1h", "--percentiles", "50,90,95,99"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert stats.returncode == 0, stats.stderr
    assert "p50" in stats.stdout and "p99" in stats.stdout and "overhead" in stats.stdout
    js = subprocess.run([*cli, "stats", "--url", gw.url, "--last", "1h", "--format", "json"],
                        capture_output=True, text=True, env=env, timeout=30)
    import json

    summary = json.loads(js.stdout)
    assert summary["requests"] >= 1 and set(summary["latency_ms"]) == {"total", "upstream", "overhead", "ttfb"}


def test_shutdown_flushes_pending_entries(obs_dir: Path, mock_upstream: Proc, slow_upstream: Proc) -> None:
    # The flush tick is a minute away: only the shutdown flush can write these.
    p = start_observed(obs_dir, "flush", mock_upstream, slow_upstream, observe={"flush_interval_s": 60})
    try:
        ids = [chat(p, f"flush {i}") for i in range(6)]
    finally:
        p.proc.send_signal(signal.SIGTERM)
        p.proc.wait(timeout=30)
    conn = sqlite3.connect(obs_dir / "flush" / "audit.db")
    written = {row[0] for row in conn.execute("SELECT request_id FROM audit")}
    conn.close()
    assert set(ids) <= written
