"""The Redis audit sink (stream shared by every worker and instance) against a real redis-server."""

from __future__ import annotations

import pytest

from gateway.observe.audit_store import AuditQuery, RedisAuditSink, StoreUnavailable
from gateway.observe.entry import AuditEntry, MetaCacheInfo, encoder


def entry(i: int, **kw: object) -> AuditEntry:
    base: dict[str, object] = dict(
        ts=1_700_000_000.0 + i, request_id=f"r{i}", key_id="team-a" if i % 2 else "team-b", endpoint="chat",
        model="gpt-4o-mini", requested_model="gpt-4o-mini", provider="primary", status=200,
        routing_strategy="direct", routing_reason="provider:primary", latency_ms=1.0, overhead_ms=0.1)
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


async def test_redis_sink_filters_pages_tail_and_cap(redis_url: str) -> None:
    w1, w2 = RedisAuditSink(redis_url, max_entries=1000), RedisAuditSink(redis_url, max_entries=1000)
    batch = [entry(i) for i in range(300)]
    batch[10] = entry(10, status=503)
    batch[20] = entry(20, metacache=MetaCacheInfo(hit=True, phase=3, tier="exact"))
    await w1.write([encoder.encode(e) for e in batch[:150]])
    await w2.write([encoder.encode(e) for e in batch[150:]])  # another worker, same stream
    ids = lambda p: [e.request_id for e in p.entries]  # noqa: E731
    assert ids(await w1.query(AuditQuery(status="5xx"))) == ["r10"]
    assert ids(await w1.query(AuditQuery(cache_hit=True))) == ["r20"]
    assert ids(await w1.query(AuditQuery(key_id="team-a", limit=2))) == ["r299", "r297"]
    # Pages of 40 over everything: newest first, nothing twice, nothing missed.
    seen: list[str] = []
    q = AuditQuery(limit=40)
    while True:
        page = await w2.query(q)
        seen += ids(page)
        if page.next_cursor is None:
            break
        q.cursor = page.next_cursor
    assert seen == [f"r{i}" for i in range(299, -1, -1)]
    # A narrow filter over a long range pages too (the cursor moves even on empty pages).
    page = await w1.query(AuditQuery(request_id="r5", limit=5))
    assert ids(page) == ["r5"]
    # Tail: from the head, only what comes next.
    head = (await w1.query(AuditQuery(limit=1))).head_cursor
    await w1.write([encoder.encode(entry(1000))])
    tail = await w1.query(AuditQuery(after=head))
    assert ids(tail) == ["r1000"]
    assert (await w1.query(AuditQuery(after=tail.next_cursor))).entries == []
    await w1.close()
    await w2.close()
    capped = RedisAuditSink(redis_url, max_entries=50)
    await capped.write([encoder.encode(entry(i)) for i in range(2000, 2400)])
    # MAXLEN ~: Redis trims whole macro-nodes, so a little over the cap may stay.
    left = len((await capped.query(AuditQuery(limit=1000))).entries)
    assert 50 <= left < 400
    await capped.close()


async def test_redis_down_is_store_unavailable() -> None:
    from tests.conftest import free_port

    s = RedisAuditSink(f"redis://127.0.0.1:{free_port()}/0", max_entries=10)
    with pytest.raises(StoreUnavailable):
        await s.write([encoder.encode(entry(1))])
    with pytest.raises(StoreUnavailable):
        await s.query(AuditQuery())
    await s.close()
