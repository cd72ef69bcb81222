"""Audit queries on the embedded (SQLite) sink, query-string parsing, and the shared statistics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.errors import BadRequest
from gateway.observe.api import parse_query
from gateway.observe.audit_store import AuditQuery, SqliteAuditSink
from gateway.observe.entry import AuditEntry, MetaCacheInfo, encoder
from gateway.observe.stats import parse_duration, percentile, summarize


def entry(i: int, **kw: object) -> AuditEntry:
    base: dict[str, object] = dict(
        ts=1_700_000_000.0 + i, request_id=f"r{i}", key_id="team-a" if i % 2 else "team-b", endpoint="chat",
        model="gpt-4o-mini", requested_model="gpt-4o-mini", provider="primary", status=200,
        routing_strategy="direct", routing_reason="provider:primary", latency_ms=float(i), overhead_ms=0.1,
        upstream_ms=float(i) - 0.1, ttfb_ms=float(i))
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


@pytest.fixture
async def sink(tmp_path: Path) -> SqliteAuditSink:
    s = SqliteAuditSink(str(tmp_path / "audit.db"), max_entries=1000, retention_s=1e12)
    entries = [entry(i) for i in range(20)]
    entries[5] = entry(5, status=502, error="upstream_error")
    entries[6] = entry(6, model="claude-x", requested_model="claude-house")
    entries[7] = entry(7, metacache=MetaCacheInfo(hit=True, phase=1, tier="intent", tokens_saved=9))
    await s.write([encoder.encode(e) for e in entries[:10]])
    await s.write([encoder.encode(e) for e in entries[10:]])  # a second worker's batch, same file
    return s


async def test_filters(sink: SqliteAuditSink) -> None:
    ids = lambda page: [e.request_id for e in page.entries]  # noqa: E731
    assert ids(await sink.query(AuditQuery(status="5xx"))) == ["r5"]
    assert ids(await sink.query(AuditQuery(status="502"))) == ["r5"]
    assert ids(await sink.query(AuditQuery(model="claude-house"))) == ["r6"]
    assert ids(await sink.query(AuditQuery(model="claude-x"))) == ["r6"]
    assert ids(await sink.query(AuditQuery(cache_hit=True))) == ["r7"]
    assert len((await sink.query(AuditQuery(cache_hit=False))).entries) == 19
    assert ids(await sink.query(AuditQuery(key_id="team-a", since=1_700_000_010, until=1_700_000_013))) == [
        "r13", "r11"]
    assert ids(await sink.query(AuditQuery(request_id="r3"))) == ["r3"]
    await sink.close()


async def test_pagination_newest_first_then_tail(sink: SqliteAuditSink) -> None:
    seen: list[str] = []
    q = AuditQuery(limit=6)
    pages = 0
    while True:
        page = await sink.query(q)
        pages += 1
        seen += [e.request_id for e in page.entries]
        if page.next_cursor is None:
            break
        q.cursor = page.next_cursor
    assert seen == [f"r{i}" for i in range(19, -1, -1)] and pages == 4
    head = (await sink.query(AuditQuery(limit=1))).head_cursor
    await sink.write([encoder.encode(entry(100)), encoder.encode(entry(101))])
    tail = await sink.query(AuditQuery(after=head, limit=10))
    assert [e.request_id for e in tail.entries] == ["r100", "r101"]
    again = await sink.query(AuditQuery(after=tail.next_cursor))
    assert again.entries == [] and again.next_cursor == tail.next_cursor
    await sink.close()


async def test_retention_by_count(tmp_path: Path) -> None:
    s = SqliteAuditSink(str(tmp_path / "a.db"), max_entries=5, retention_s=1e12)
    await s.write([encoder.encode(entry(i)) for i in range(12)])
    page = await s.query(AuditQuery(limit=100))
    assert [e.request_id for e in page.entries] == [f"r{i}" for i in range(11, 6, -1)]
    await s.close()


def test_parse_query() -> None:
    q = parse_query("from=1700000000&to=2024-01-01T00:00:00Z&model=gpt-4o&key=team-a&cache_hit=false"
                    "&status=5xx&limit=5000&cursor=1700000000000-3")
    assert q.since == 1_700_000_000 and q.until == 1704067200.0
    assert (q.model, q.key_id, q.cache_hit, q.status, q.limit, q.cursor) == (
        "gpt-4o", "team-a", False, "5xx", 1000, "1700000000000-3")
    assert abs(parse_query("last=15m").since - (time.time() - 900)) < 2  # type: ignore[operator]
    for bad in ("from=yesterday", "cache_hit=maybe", "status=abc", "limit=x", "cursor=drop table"):
        with pytest.raises(BadRequest):
            parse_query(bad)


def test_summary_figures() -> None:
    entries = [entry(i) for i in range(1, 101)]
    entries[0] = entry(1, metacache=MetaCacheInfo(hit=True, phase=4, tier="semantic", tokens_saved=50),
                       saved_usd=0.25, saved_cache_usd=0.25, upstream_ms=None)
    entries[1] = entry(2, status=500)
    s = summarize(entries, since=1_700_000_000, until=1_700_000_100, percentiles=(50, 99))
    assert s.requests == 100 and s.errors == 1 and s.hits == 1 and s.hit_ratio == 0.01
    assert s.phases["semantic"] == {"hits": 1, "ratio": 0.01} and s.phases["intent"]["hits"] == 0
    assert s.latency_ms["total"] == {"p50": 50.5, "p99": 99.01}
    assert s.rps == pytest.approx(1.0)  # ten entries in the last ten seconds
    assert s.tokens["saved_cache"] == 50 and s.dollars["saved_total"] == 0.25
    assert percentile([], 50) == 0.0 and percentile([3.0], 99) == 3.0
    assert parse_duration("1h") == 3600 and parse_duration("90s") == 90 and parse_duration("2") == 2
