"""`gateway events tail` and `gateway events stats`: the audit log from a terminal.

Where the entries come from, first match wins:
  --url URL [--admin-key K]   a running gateway's GET /api/vas/logs (key default: $GATEWAY_MASTER_KEY)
  --redis-url URL             the Redis stream every instance writes (default: $GATEWAY_REDIS_URL)
  --path FILE                 the embedded SQLite audit file (default: audit.db beside the store file
                              of --config, else .gateway/audit.db)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import msgspec

from gateway.observe.audit_store import AuditQuery, Page, RedisAuditSink, SqliteAuditSink
from gateway.observe.entry import AuditEntry
from gateway.observe.stats import Summary, parse_duration, summarize

_enc = msgspec.json.Encoder()


class Source(Protocol):
    async def query(self, q: AuditQuery) -> Page: ...
    async def close(self) -> None: ...


class ApiSource:
    def __init__(self, url: str, admin_key: str) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self._session: Any = None

    async def query(self, q: AuditQuery) -> Page:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        params: dict[str, str] = {"limit": str(q.limit)}
        for name, value in (("from", q.since), ("to", q.until), ("model", q.model), ("key", q.key_id),
                            ("status", q.status), ("cursor", q.cursor), ("after", q.after),
                            ("request_id", q.request_id)):
            if value is not None:
                params[name] = str(value)
        if q.cache_hit is not None:
            params["cache_hit"] = "true" if q.cache_hit else "false"
        headers = {"authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        async with self._session.get(f"{self.url}/api/vas/logs?{urlencode(params)}", headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"gateway events: {self.url} answered {resp.status}: {body[:300].decode()}")
        data = msgspec.json.decode(body)
        entries = msgspec.convert(data["data"], list[AuditEntry])
        return Page(entries, data.get("next_cursor"), data.get("head_cursor"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def open_source(args: argparse.Namespace) -> Source:
    if args.url:
        return ApiSource(args.url, args.admin_key or os.environ.get("GATEWAY_MASTER_KEY", ""))
    redis_url = args.redis_url or os.environ.get("GATEWAY_REDIS_URL", "")
    path = args.path
    if not redis_url and not path and args.config:
        from gateway.config import load_config
        from gateway.observe.settings import audit_path, resolve

        cfg = load_config(args.config)
        redis_url = cfg.store.redis_url
        path = audit_path(resolve(cfg).observe, cfg.store.embedded_path)
    if redis_url:
        return RedisAuditSink(redis_url, max_entries=1)
    path = path or os.path.join(".gateway", "audit.db")
    if not os.path.exists(path):
        raise SystemExit(f"gateway events: no audit file at {path} (use --path, --redis-url or --url)")
    return SqliteAuditSink(path, max_entries=1 << 62, retention_s=float("inf"))


def _filters(args: argparse.Namespace) -> AuditQuery:
    q = AuditQuery(model=args.model, key_id=args.key, status=args.status)
    if args.cache_hit is not None:
        q.cache_hit = args.cache_hit == "true"
    return q


# ----------------------------------------------------------------------------------- formatting

COLUMNS = (("time", 8), ("request", 24), ("key", 10), ("model", 18), ("st", 3), ("routing", 24),
           ("total", 8), ("upstr", 8), ("ovh", 7), ("in", 6), ("out", 6), ("cached", 6), ("saved", 6))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_row(e: AuditEntry) -> str:
    values = (datetime.fromtimestamp(e.ts).strftime("%H:%M:%S"), e.request_id, e.key_id or "-", e.model,
              str(e.status), e.routing_reason, _ms(e.latency_ms), _ms(e.upstream_ms), _ms(e.overhead_ms),
              str(e.tokens_in), str(e.tokens_out), str(e.tokens_cached),
              str(e.metacache.tokens_saved + e.tokens_compressed))
    return "  ".join(v[:w].ljust(w) if i < 6 else v.rjust(w)
                     for i, (v, (_, w)) in enumerate(zip(values, COLUMNS, strict=True)))


def header() -> str:
    return "  ".join(n.ljust(w) if i < 6 else n.rjust(w) for i, (n, w) in enumerate(COLUMNS))


def format_summary(s: Summary, last: str) -> str:
    out = [f"last {last}: {s.requests} requests, {s.errors} errors ({s.error_rate:.1%}), "
           f"cache hits {s.hits} ({s.hit_ratio:.1%})"]
    phases = ", ".join(f"{name} {v['hits']:.0f} ({v['ratio']:.1%})" for name, v in s.phases.items())
    out.append(f"hits per phase: {phases}")
    out.append(f"routing: {', '.join(f'{k} {v}' for k, v in sorted(s.routing.items())) or '-'}")
    cols = list(next(iter(s.latency_ms.values())).keys())
    out.append("")
    out.append("latency ms".ljust(12) + "".join(c.rjust(10) for c in cols))
    for name, values in s.latency_ms.items():
        out.append(name.ljust(12) + "".join(f"{values[c]:10.2f}" for c in cols))
    out.append("")
    t = s.tokens
    out.append(f"tokens: in {t['input']}, out {t['output']}, provider-cached {t['cached']}, "
               f"saved by cache {t['saved_cache']}, removed by compression {t['saved_compression']}")
    d = s.dollars
    out.append(f"dollars: cost {d['cost']:.4f}, saved {d['saved_total']:.4f} (cache {d['saved_cache']:.4f}, "
               f"compression {d['saved_compression']:.4f}, provider cache {d['saved_provider_cache']:.4f})")
    return "\n".join(out)


# ----------------------------------------------------------------------------------- commands


async def _tail(args: argparse.Namespace) -> None:
    source = open_source(args)
    try:
        q = _filters(args)
        q.limit = args.lines
        if args.since:
            q.since = time.time() - parse_duration(args.since)
        page = await source.query(q)
        if args.format == "table":
            print(header())
        for e in reversed(page.entries):
            _print(e, args.format)
        q = _filters(args)
        q.limit, q.after = 500, page.head_cursor or "0"
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            page = await source.query(q)
            for e in page.entries:
                _print(e, args.format)
            q.after = page.next_cursor or q.after
            if len(page.entries) < q.limit:
                await asyncio.sleep(args.interval)
    finally:
        await source.close()


def _print(e: AuditEntry, fmt: str) -> None:
    print(_enc.encode(e).decode() if fmt == "json" else format_row(e), flush=True)


async def _stats(args: argparse.Namespace) -> None:
    source = open_source(args)
    try:
        now = time.time()
        since = now - parse_duration(args.last)
        q = _filters(args)
        q.since, q.until, q.limit = since, now, 1000
        entries: list[AuditEntry] = []
        while len(entries) < args.max_entries:
            page = await source.query(q)
            entries.extend(page.entries)
            if page.next_cursor is None:
                break
            q.cursor = page.next_cursor
        pcts = [float(p) for p in args.percentiles.split(",") if p.strip()]
        summary = summarize(entries, since=since, until=now, percentiles=pcts)
        if args.format == "json":
            print(_enc.encode(summary).decode())
        else:
            print(format_summary(summary, args.last))
    finally:
        await source.close()


def _run(coro: Any) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a running gateway (reads GET /api/vas/logs)")
    p.add_argument("--admin-key", help="master key for --url (default: $GATEWAY_MASTER_KEY)")
    p.add_argument("--redis-url", help="read the Redis audit stream (default: $GATEWAY_REDIS_URL)")
    p.add_argument("--path", help="the embedded audit file (default: .gateway/audit.db)")
    p.add_argument("--config", "-c", help="take the store from this configuration file")
    p.add_argument("--model")
    p.add_argument("--key", help="key id")
    p.add_argument("--status", help="a status code or class, e.g. 200 or 5xx")
    p.add_argument("--cache-hit", choices=("true", "false"))
    p.add_argument("--format", choices=("table", "json"), default="table")


def register(subparsers: Any) -> None:
    ev = subparsers.add_parser("events", help="the audit log: follow it, or summarise a time window")
    sub = ev.add_subparsers(dest="events_command", required=True)
    t = sub.add_parser("tail", help="print the latest entries, then follow new ones")
    _add_source(t)
    t.add_argument("-n", "--lines", type=int, default=10, help="entries shown before following")
    t.add_argument("--since", help="only entries newer than this (e.g. 5m)")
    t.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    t.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = never)")
    t.set_defaults(func=lambda a: _run(_tail(a)))
    s = sub.add_parser("stats", help="rates, hit ratios, latency percentiles and savings over a window")
    _add_source(s)
    s.add_argument("--last", default="1h", help="window: 90s, 15m, 1h, 2d")
    s.add_argument("--percentiles", default="50,90,95,99")
    s.add_argument("--max-entries", type=int, default=200_000)
    s.set_defaults(func=lambda a: _run(_stats(a)))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="gateway")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
