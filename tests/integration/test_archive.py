"""The archive behind one interface: SQLite (embedded) and a real PostgreSQL server; redaction always."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.observe.archive import (
    ArchiveSink,
    PostgresArchive,
    SqliteArchive,
    StoreUnavailable,
    build_record,
    open_archive,
    redact,
)
from gateway.observe.entry import AuditEntry
from gateway.observe.settings import ArchiveConfig

pytest_plugins = ["tests.integration.conftest_pg"]


def entry(rid: str, ts: float) -> AuditEntry:
    return AuditEntry(ts=ts, request_id=rid, key_id="team-a", endpoint="chat", model="gpt-4o-mini",
                      requested_model="gpt-4o-mini", provider="primary", status=200, routing_strategy="direct",
                      routing_reason="provider:primary", latency_ms=12.0, overhead_ms=0.2)


REQUEST = (b'{"model":"gpt-4o-mini","api_key":"abc\\"def","messages":[{"role":"user",'
           b'"content":"use sk-ant-api03-abcdefghijklmnop please"}]}')
HEADERS = {"authorization": "Bearer sk-live-123456789", "x-api-key": "k", "content-type": "application/json",
           "x-debug": "token Bearer abcdef123456"}


@pytest.fixture(params=["sqlite", "postgres"])
async def sink(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArchiveSink]:
    if request.param == "sqlite":
        s: ArchiveSink = open_archive(ArchiveConfig(enabled=True, path=str(tmp_path / "archive.db")))
        assert isinstance(s, SqliteArchive)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        s = open_archive(ArchiveConfig(enabled=True, backend="postgres", dsn=dsn,
                                       table=f"archive_{uuid.uuid4().hex[:8]}"))
        assert isinstance(s, PostgresArchive)
    yield s
    await s.close()


def test_redaction() -> None:
    assert redact(b"key sk-proj-abc_DEF-123456 end") == b"key sk-[redacted] end"
    assert redact(b"Authorization: Bearer eyJhbGciOi.xyz") == b"Authorization: Bearer [redacted]"
    assert redact(b'{"password": "hunter2\\"x", "n": 1}') == b'{"password": "[redacted]", "n": 1}'
    assert redact(b"sk-short") == b"sk-short"  # too short to be a key; the word "sk-" in prose survives


async def test_write_get_recent(sink: ArchiveSink) -> None:
    now = time.time()
    plain = build_record(entry("r1", now - 2), HEADERS, REQUEST, b'{"choices":[{"message":{"content":"hi"}}]}',
                         None, 1 << 20)
    streamed = build_record(entry("r2", now - 1), {}, b'{"model":"m","stream":true}', None,
                            [(None, b'{"choices":[{"delta":{"content":"a"}}]}'), ("done", b"[DONE]")], 1 << 20)
    big = build_record(entry("r3", now), {}, b"x" * 5000, b"y" * 5000, None, 100)
    await sink.write([plain, streamed])
    await sink.write([big, plain])  # the same request id twice: kept once
    got = await sink.get("r1")
    assert got is not None and got == plain
    assert got.request_headers["authorization"] == "[redacted]" and got.request_headers["x-api-key"] == "[redacted]"
    assert got.request_headers["x-debug"] == "token Bearer [redacted]"
    assert got.request["api_key"] == "[redacted]"
    assert got.request["messages"][0]["content"] == "use sk-[redacted] please"
    assert got.response == {"choices": [{"message": {"content": "hi"}}]}
    s2 = await sink.get("r2")
    assert s2 is not None and s2.response == [{"data": {"choices": [{"delta": {"content": "a"}}]}},
                                              {"event": "done", "data": "[DONE]"}]
    s3 = await sink.get("r3")
    assert s3 is not None and s3.truncated and s3.request == "x" * 100
    assert await sink.get("nope") is None
    recent = await sink.recent(10)
    assert [r.request_id for r in recent] == ["r3", "r2", "r1"]
    assert [r.request_id for r in await sink.recent(1, before=now - 0.5)] == ["r2"]


async def test_unreachable_postgres_is_store_unavailable() -> None:
    s = PostgresArchive("postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(StoreUnavailable):
        await s.write([build_record(entry("r", time.time()), {}, b"{}", b"{}", None, 100)])
    with pytest.raises(StoreUnavailable):  # the breaker now fails fast, without connecting
        await s.get("r")
    await s.close()


def test_bad_table_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"archive\.table"):
        PostgresArchive("postgresql://x@127.0.0.1/db", table="archive; drop table users")
    with pytest.raises(ValueError, match=r"archive\.dsn"):
        open_archive(ArchiveConfig(enabled=True, backend="postgres"))
