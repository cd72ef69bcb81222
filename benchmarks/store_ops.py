"""Store operations per request, by path, measured on a real gateway (Granian, 2 workers) with Redis.

Starts a redis-server, the mock upstream and `gateway serve` on free ports, then sends each path's
requests and counts what reached Redis with MONITOR: commands sent by the gateway (a pipeline's
commands count one each) and commands run inside Lua scripts (the limit check), separately. The
background work (vector-log sync, ledger and correction flushes) is included: it is what a request
causes at this rate. Run: `python -m benchmarks.store_ops [--requests 200]`; prints a JSON table.

    pass-through   not cacheable (temperature 1), a configured key without limits
    miss           cacheable (temperature 0), every prompt new: lookup, shared flight, write-back
    hit            the same cacheable prompt again (first one excluded)
    governed       pass-through with a virtual key carrying rpm, tpm and a daily budget
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import free_port, own_redis_server
from tests.e2e.conftest import API_KEY, MASTER_KEY, start_mock, start_process, write_config

_LINE = re.compile(rb'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


class Monitor:
    """Counts commands per name from MONITOR, split into client commands and script-internal ones."""

    def __init__(self, port: int) -> None:
        self.client: collections.Counter[str] = collections.Counter()
        self.lua: collections.Counter[str] = collections.Counter()
        self._conn = redis.Redis(port=port).connection_pool.get_connection()
        self._conn.send_command("MONITOR")
        self._conn.read_response()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                line = self._conn._parser.read_response()  # type: ignore[union-attr]
            except Exception:
                return
            m = _LINE.match(line if isinstance(line, bytes) else str(line).encode())
            if m is None:
                continue
            who, cmd = m.group(1), m.group(2).decode().upper()
            if cmd in ("MONITOR", "INFO", "CLIENT"):
                continue
            (self.lua if who == b"lua" else self.client)[cmd] += 1

    def snapshot(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        return collections.Counter(self.client), collections.Counter(self.lua)

    def close(self) -> None:
        self._stop = True
        self._conn.disconnect()


_MSRP = Path(__file__).parent / "quality" / "data" / "msr_paraphrase_train.txt"


def _sentences() -> list[str]:
    """Distinct news sentences (MSRP train, first of each pair): plain prose that rarely paraphrases
    another, so a "miss" really misses (ids or hex would look structured and skip phases 1, 2, 4)."""
    seen: dict[str, None] = {}
    for line in _MSRP.read_text(encoding="utf-8-sig").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) == 5:
            seen.setdefault(cols[3], None)
    return list(seen)


def _body(text: str, temperature: float) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "temperature": temperature, "messages": [{"role": "user", "content": text}]}


async def _send(url: str, key: str, bodies: list[dict[str, Any]], concurrency: int = 8) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:  # loopback: no proxy
        async def one(body: dict[str, Any]) -> int:
            async with sem:
                r = await client.post(url + "/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {key}"})
                return r.status_code

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def _diff(after: collections.Counter[str], before: collections.Counter[str], n: int) -> dict[str, float]:
    d = after - before
    return {k: round(v / n, 3) for k, v in sorted(d.items())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    n = args.requests
    tmp = Path(f"/tmp/store-ops-{uuid.uuid4().hex[:6]}")
    tmp.mkdir()
    servers = own_redis_server()
    rs = next(servers)
    mock = start_mock(tmp, "mock")
    gov = {"key_cache_ttl_s": 0.5, "prices": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}}
    # No load shedding of phase 4 (busy lag, embedding budgets): every miss runs the full semantic
    # path, the upper bound of what a miss costs the store.
    cache = {"busy_lag_ms": 0, "embed_budget_ms": 10_000, "write_embed_budget_ms": 10_000}
    cfg = write_config(tmp / "gw.yaml", mock, free_port(), mock, extra={"governance": gov, "cache": cache})
    env = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream", "GATEWAY_MASTER_KEY": MASTER_KEY,
           "GATEWAY_REDIS_URL": rs.url}
    gw = start_process(["serve", "--config", str(cfg), "--workers", "2"], tmp / "gw.log", env=env,
                       ready_path="/readyz")
    mon = Monitor(rs.port)
    results: dict[str, Any] = {}
    try:
        created = httpx.post(gw.url + "/admin/keys", headers={"authorization": f"Bearer {MASTER_KEY}"},
                             json={"owner": "bench", "rpm": 100_000, "tpm": 100_000_000,
                                   "budget": {"usd": 1000, "period": "day"}}, timeout=10, trust_env=False).json()
        vkey = created["key"]
        run = 0

        def phase(name: str, key: str, bodies: list[dict[str, Any]]) -> None:
            nonlocal run
            run += 1
            before = mon.snapshot()
            t0 = time.monotonic()
            codes = asyncio.run(_send(gw.url, key, bodies))
            took = time.monotonic() - t0
            time.sleep(1.0)  # after-work flushes (corrections 50 ms, ledger) land before the count
            after = mon.snapshot()
            client, lua = _diff(after[0], before[0], len(bodies)), _diff(after[1], before[1], len(bodies))
            results[name] = {"requests": len(bodies), "ok": codes.count(200), "rps": round(len(bodies) / took, 1),
                             "commands_per_request": round(sum(client.values()), 2),
                             "lua_commands_per_request": round(sum(lua.values()), 2),
                             "by_command": client, "inside_scripts": lua}

        texts = iter(_sentences())
        asyncio.run(_send(gw.url, API_KEY, [_body(next(texts), 0) for _ in range(20)]))
        phase("pass-through", API_KEY, [_body(next(texts), 1.0) for _ in range(n)])
        phase("miss", API_KEY, [_body(next(texts), 0) for _ in range(n)])
        asyncio.run(_send(gw.url, API_KEY, [_body("what is the boiling point of water?", 0)]))
        phase("hit", API_KEY, [_body("what is the boiling point of water?", 0) for _ in range(n)])
        phase("governed", vkey, [_body(next(texts), 1.0) for _ in range(n)])
    finally:
        mon.close()
        gw.stop()
        mock.stop()
        servers.close()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
