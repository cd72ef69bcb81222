"""Store commands and round trips per request, by path, measured on a real local Redis Cluster.

Starts six `redis-server --cluster-enabled yes` nodes formed into 3 masters + 3 replicas (the test
helper `own_redis_cluster`), then `gateway serve` (2 Granian workers, the built-in mock as upstream,
store `redis+cluster://`) and sends each path's requests. Per path, two passes of the same requests:

- pass 1 counts: the `INFO commandstats` deltas of the three masters, summed (every command the
  server executed, the ones a script runs included), `total_reads_processed` (one per socket read:
  a pipeline or one command arriving at once is one read, so this counts round trips, each master's
  part of a cross-slot pipeline separately) and the masters' CPU time (`INFO cpu`, getrusage). The
  benchmark's own INFO calls and the idle background (replica acks, timers: measured for a few
  seconds with the gateway idle) are subtracted; the vector-log sync, which runs on a timer while
  lookups happen, is reported apart (per worker and second).
- pass 2 runs MONITOR on every master, to split what the gateway sent from what ran inside scripts
  and to name the keys (by family: the key up to its hash tag). MONITOR costs the server CPU, so pass
  2 gives no CPU figure.

Paths: pass-through (the route's cache off; temperature 1, not cacheable; `Cache-Control: no-cache`,
which skips the lookup but still writes back; `no-cache, no-store`), miss then write (every prompt
new), exact hit, and the governed paths (a virtual key in a team, rpm + tpm + daily budget on the key,
rpm + tpm + monthly budget on the team) with quota leases on (the default: far from its limits a
worker admits from a slice) and off (every admit a store call: what a request near its limit costs).

    python -m benchmarks.cluster.store_ops [--requests 300] [--concurrency 16]   # prints JSON
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from benchmarks.harness import procs
from benchmarks.harness.targets import gateway_command
from gateway.bench.progress import Progress
from tests.conftest import RedisClusterNodes, own_redis_cluster

KEY_ENV, KEY = "BENCH_CLUSTER_KEY", "sk-bench-cluster-5d1e8a"
MASTER_KEY = "sk-bench-cluster-master-90c2f3"
BIG = 1_000_000_000  # limits far above the load: every request counted, none refused
_MSRP = Path(__file__).resolve().parents[1] / "quality" / "data" / "msr_paraphrase_train.txt"
# Our own commands on the masters (snapshots), and the cluster client's topology reads.
# Replication acks (replconf) are the replicas', not the gateway's.
_OURS = frozenset({"info", "monitor", "client|setinfo", "cluster|slots", "cluster|shards", "cluster|nodes", "replconf"})
# The vector-log sync: time-based (at most every 0.25 s per worker while lookups run), not per request;
# one XRANGE per log shard per sync, in one pipeline: one round trip per master.
SYNC = frozenset({"xrange", "xrevrange"})
VLOG_SHARDS = 8


def _timed(cmd: str, family: str) -> bool:
    """Time-based per-worker reads seen by MONITOR: the generation refresh (1/s) and the log sync."""
    return family == "gw:cache-gen" or (family == "gw:vlog" and cmd.lower() in SYNC)

_LINE = re.compile(rb'^[\d.]+ \[\d+ ([^\]]+)\] (.*)$')
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Path_:
    name: str
    what: str
    model: str = "gpt-4o-mini"
    temperature: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    governed: bool = False
    hit: bool = False  # the same prompt every time (primed once before the pass)


PATHS = (
    Path_("pass-through (route cache off)", "the model's route has `cache: {enabled: false}`", model="uncached"),
    Path_("pass-through (temperature 1)", "not cacheable (only temperature 0 is)", temperature=1.0),
    Path_("no-cache header", "`Cache-Control: no-cache`: lookup skipped, answer still written back",
          headers=(("cache-control", "no-cache"),)),
    Path_("no-cache, no-store", "`Cache-Control: no-cache, no-store`: neither looked up nor written",
          headers=(("cache-control", "no-cache, no-store"),)),
    Path_("miss, then write", "cacheable, every prompt new: lookup, lease, upstream, write-back (exact + "
          "semantic)"),
    Path_("hit (exact)", "the same cacheable prompt again", hit=True),
    Path_("governed pass-through", "virtual key + team limits, route cache off", model="uncached", governed=True),
    Path_("governed miss", "virtual key + team limits, every prompt new", governed=True),
    Path_("governed hit", "virtual key + team limits, exact hit", governed=True, hit=True),
)
NO_LEASE_PATHS = tuple(p for p in PATHS if p.governed)


# ---------------------------------------------------------------------------------------- MONITOR


def key_family(key: str) -> str:
    """A key's family: up to its hash tag (`gw:c:e:{P}...` -> `gw:c:e`), else its leading short words
    (`gw:sf:<hex>` -> `gw:sf`, `gw:c:lru` -> `gw:c:lru`)."""
    if "{" in key:
        return key.split("{", 1)[0].rstrip(":") or key
    out = []
    for part in key.split(":"):
        if not part or len(part) > 10 or not part.replace("-", "").isalpha():
            break
        out.append(part)
    return ":".join(out) or "?"


def parse_monitor(line: bytes) -> tuple[str, str, str] | None:
    """(`lua` or `client`, COMMAND, key family) of one MONITOR line; None for other lines."""
    m = _LINE.match(line)
    if m is None:
        return None
    who = "lua" if m.group(1) == b"lua" else "client"
    args = [a.decode("utf-8", "replace") for a in _ARG.findall(m.group(2))]
    if not args:
        return None
    cmd = args[0].upper()
    key = ""
    if cmd in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL"):
        key = args[3] if len(args) > 3 and args[2] != "0" else ""
    elif cmd in ("XREAD", "XREADGROUP"):
        upper = [a.upper() for a in args]
        key = args[upper.index("STREAMS") + 1] if "STREAMS" in upper and upper.index("STREAMS") + 1 < len(args) else ""
    elif len(args) > 1:
        key = args[1]
    return who, cmd, key_family(key) if key else "-"


class Monitor:
    """MONITOR on one node: (who, command, key family) counts, read on a thread."""

    def __init__(self, port: int) -> None:
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._lock = threading.Lock()
        self._conn = redis.Redis(port=port).connection_pool.get_connection()
        self._conn.send_command("MONITOR")
        self._conn.read_response()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"monitor-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                line = self._conn.read_response()
            except Exception:
                return
            got = parse_monitor(line if isinstance(line, bytes) else str(line).encode())
            if got is not None and got[1] not in ("INFO", "MONITOR"):
                with self._lock:
                    self.counts[got] += 1

    def snapshot(self) -> collections.Counter[tuple[str, str, str]]:
        with self._lock:
            return collections.Counter(self.counts)

    def close(self) -> None:
        self._stop = True
        self._conn.disconnect()


# ------------------------------------------------------------------------------------ the masters


@dataclass
class Snapshot:
    calls: collections.Counter[str]
    reads: int
    cpu_s: float
    at: float


@dataclass
class Masters:
    """The three masters' counters, read over one connection each (opened once, so connecting does
    not add reads) and minus our own INFO reads."""

    cluster: RedisClusterNodes
    ports: list[int] = field(default_factory=list)
    _conns: dict[int, redis.Redis] = field(default_factory=dict)
    own_reads: int = 0  # INFO calls we made: one read each on its master

    def __post_init__(self) -> None:
        for p in self.cluster.alive():
            c = redis.Redis(port=p, socket_timeout=5)
            if c.execute_command("ROLE")[0] == b"master":
                self.ports.append(p)
                self._conns[p] = c

    def snapshot(self) -> Snapshot:
        calls: collections.Counter[str] = collections.Counter()
        reads, cpu = 0, 0.0
        for p in self.ports:
            info = self._conns[p].execute_command("INFO", "stats", "commandstats", "cpu")
            self.own_reads += 1
            reads += int(info["total_reads_processed"])
            for name, stats in info.items():
                if isinstance(name, str) and name.startswith("cmdstat_"):
                    calls[name.removeprefix("cmdstat_")] += int(stats["calls"])
            cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])  # getrusage: microseconds
        return Snapshot(calls, reads - self.own_reads, cpu, time.monotonic())

    def settle(self, quiet_s: float = 0.6, max_s: float = 6.0) -> Snapshot:
        """The snapshot once the gateway's after-work (batched audit and ledger writes, corrections)
        has landed: the command count unchanged over `quiet_s`."""
        last = self.snapshot()
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.snapshot()
            if _gateway_calls(now.calls) == _gateway_calls(last.calls):
                return now
            last = now
        return last


def _gateway_calls(calls: collections.Counter[str]) -> int:
    """What after-work writes: every command but ours and the time-based reads (the generation
    refresh's HGETALL, once a second per worker, and the log sync's XRANGE)."""
    return sum(v for k, v in calls.items() if k not in _OURS and k not in SYNC and k != "hgetall")


@dataclass(frozen=True)
class Background:
    """The idle rate per second (gateway running, no requests) of commands, reads and CPU."""

    calls: dict[str, float]
    reads: float
    cpu_s: float

    @staticmethod
    def measure(before: Snapshot, after: Snapshot) -> Background:
        dt = max(after.at - before.at, 1e-6)
        calls = {k: v / dt for k, v in (after.calls - before.calls).items() if k not in _OURS}
        return Background(calls, (after.reads - before.reads) / dt, (after.cpu_s - before.cpu_s) / dt)


def per_request(before: Snapshot, after: Snapshot, n: int, bg: Background, took: float, workers: int,
                masters: int) -> dict[str, Any]:
    """The counts a pass added, minus the idle background over its duration, per request; the
    vector-log sync apart (per worker and second while requests ran: it does not grow with them)."""
    dt = after.at - before.at
    delta = after.calls - before.calls
    by_cmd = {}
    for k in sorted(set(delta) | set(bg.calls)):
        if k in _OURS or k in SYNC:
            continue
        v = (delta.get(k, 0) - bg.calls.get(k, 0.0) * dt) / n
        if abs(v) >= 0.005:
            by_cmd[k] = round(v, 3)
    by_cmd = dict(sorted(by_cmd.items(), key=lambda kv: -kv[1]))
    sync_cmds = sum(delta.get(k, 0) for k in SYNC)
    sync_trips = sync_cmds / VLOG_SHARDS * masters
    reads = (after.reads - before.reads - bg.reads * dt - sync_trips) / n
    cpu_us = (after.cpu_s - before.cpu_s - bg.cpu_s * dt) * 1e6 / n
    return {"commands": round(sum(by_cmd.values()), 2), "round_trips": round(reads, 2),
            "redis_cpu_us": round(cpu_us, 1), "by_command": by_cmd,
            "sync_commands_per_worker_s": round(sync_cmds / max(took, 1e-6) / workers, 1),
            "sync_commands_per_request": round(sync_cmds / n, 2)}


def monitor_per_request(before: list[collections.Counter[tuple[str, str, str]]],
                        after: list[collections.Counter[tuple[str, str, str]]], n: int) -> dict[str, Any]:
    total: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for b, a in zip(before, after, strict=True):
        total += a - b
    timed = {k: v for k, v in total.items() if _timed(k[1], k[2])}
    total -= collections.Counter(timed)
    client = sum(v for (who, _, _), v in total.items() if who == "client")
    lua = sum(v for (who, _, _), v in total.items() if who == "lua")
    families = {f"{cmd} {fam}" + (" (in script)" if who == "lua" else ""): round(v / n, 3)
                for (who, cmd, fam), v in total.most_common() if v / n >= 0.005}
    return {"client_commands": round(client / n, 2), "script_commands": round(lua / n, 2), "by_key": families,
            "timed_by_key": {f"{cmd} {fam}": round(v / n, 3) for (_, cmd, fam), v in sorted(timed.items())}}


# ------------------------------------------------------------------------------------ the gateway


def sentences() -> Iterator[str]:
    """Distinct news sentences (MSRP train, first of each pair): prose that rarely paraphrases
    another, so a miss really misses (ids or hex would look structured and skip the semantic phase)."""
    seen: dict[str, None] = {}
    for line in _MSRP.read_text(encoding="utf-8-sig").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) == 5:
            seen.setdefault(cols[3], None)
    texts = list(seen)
    yield from texts
    for step in range(1, len(texts)):  # then pairs of them: still prose, still distinct
        for i in range(len(texts)):
            yield f"{texts[i]} {texts[(i + step) % len(texts)]}"


def gateway_config(cluster_url: str, leases: bool) -> dict[str, Any]:
    mock = [{"provider": "mock"}]
    price = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
    return {
        "auth": {"enabled": True, "keys": [{"id": "app", "key_env": KEY_ENV}]},
        "server": {"mount_mock": True},
        "store": {"redis_url": cluster_url},
        "providers": {"mock": {"kind": "compatible", "base_url": "builtin:mock"}},
        "models": [{"name": "gpt-4o-mini", "deployments": mock},
                   {"name": "uncached", "deployments": mock, "cache": {"enabled": False}}],
        # No load shedding of the semantic phase (busy lag, embedding budgets): every miss runs the
        # whole semantic lookup and write-back, the upper bound of what a miss costs the store.
        "cache": {"busy_lag_ms": 0, "embed_budget_ms": 10_000, "write_embed_budget_ms": 10_000},
        "governance": {
            "leases": leases,
            "teams": {"gov": {"rpm": BIG, "tpm": BIG, "budget": {"usd": BIG, "period": "month"}}},
            "prices": {"gpt-4o-mini": price, "uncached": price},
        },
    }


def start_gateway(workdir: Path, name: str, cluster_url: str, leases: bool, workers: int) -> procs.Server:
    home = workdir / name
    home.mkdir()
    (home / "gateway.yaml").write_text(json.dumps(gateway_config(cluster_url, leases), indent=2))  # JSON is YAML
    gw = gateway_command()
    assert gw is not None, "the gateway package is not importable"
    port = procs.free_port()
    cmd = [*gw, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--config", str(home / "gateway.yaml")]
    env = {KEY_ENV: KEY, "GATEWAY_MASTER_KEY": MASTER_KEY, "GATEWAY_LOG_LEVEL": "warning"}
    server = procs.start(name, cmd, port, workdir, env=env, cwd=str(home))
    deadline = time.monotonic() + 90
    while procs.http_ok(f"http://127.0.0.1:{port}/readyz", None, {})[0] != 200:
        if time.monotonic() > deadline or server.proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} did not become ready:\n{server.log_tail()}")
        time.sleep(0.2)
    return server


def _body(model: str, text: str, temperature: float) -> dict[str, Any]:
    return {"model": model, "temperature": temperature, "messages": [{"role": "user", "content": text}]}


async def _send(url: str, key: str, bodies: list[dict[str, Any]], headers: dict[str, str], concurrency: int,
                tick: Callable[[], None]) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, trust_env=False, limits=limits) as client:  # loopback: no proxy
        async def one(body: dict[str, Any]) -> int:
            async with sem:
                r = await client.post(url + "/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {key}", **headers})
                tick()
                return r.status_code

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def create_virtual_key(url: str) -> str:
    r = httpx.post(url + "/admin/keys", headers={"authorization": f"Bearer {MASTER_KEY}"}, trust_env=False,
                   timeout=10, json={"owner": "bench", "team": "gov", "rpm": BIG, "tpm": BIG,
                                     "budget": {"usd": BIG, "period": "day"}})
    r.raise_for_status()
    return str(r.json()["key"])


class Runner:
    def __init__(self, masters: Masters, args: argparse.Namespace, progress: Progress, total: int) -> None:
        self.masters = masters
        self.args = args
        self.progress = progress
        self.total = total
        self.done = 0
        self.texts = sentences()
        self.label = ""

    def tick(self) -> None:
        self.done += 1
        self.progress.update(self.done / self.total, f"store ops: {self.label}")

    def send(self, url: str, key: str, bodies: list[dict[str, Any]], headers: dict[str, str]) -> list[int]:
        return asyncio.run(_send(url, key, bodies, headers, self.args.concurrency, self.tick))

    def bodies(self, path: Path_) -> list[dict[str, Any]]:
        n = self.args.requests
        if path.hit:
            return [_body(path.model, "What is the boiling point of water at sea level?", 0.0)] * n
        return [_body(path.model, next(self.texts), path.temperature) for _ in range(n)]

    def background(self, seconds: float) -> Background:
        self.progress.update(self.done / self.total, f"store ops: idle background ({seconds:.0f} s)", force=True)
        before = self.masters.settle()
        time.sleep(seconds)  # a fixed span with nothing sent: what an idle gateway costs per second
        return Background.measure(before, self.masters.snapshot())

    def path(self, url: str, key: str, path: Path_, bg: Background, variant: str) -> dict[str, Any]:
        self.label = f"{path.name}{variant}"
        headers = dict(path.headers)
        if path.hit:  # the entry exists before the counted passes
            self.send(url, key, self.bodies(path)[:1], headers)
            self.masters.settle()
        n = self.args.requests
        before = self.masters.settle()
        t0 = time.monotonic()
        codes = self.send(url, key, self.bodies(path), headers)
        took = time.monotonic() - t0
        counted = per_request(before, self.masters.settle(), n, bg, took, self.args.workers, len(self.masters.ports))
        mons = [Monitor(p) for p in self.masters.ports]
        try:
            mb = [m.snapshot() for m in mons]
            codes += self.send(url, key, self.bodies(path), headers)
            self.masters.settle()
            named = monitor_per_request(mb, [m.snapshot() for m in mons], n)
        finally:
            for m in mons:
                m.close()
        bad = len(codes) - codes.count(200)
        row = {"path": path.name + variant, "what": path.what, "requests": n, "non_200": bad,
               "seconds": round(took, 2), "rps": round(n / took, 1), **counted, **named}
        self.progress.log(f"store ops: {row['path']}: {row['commands']} commands, {row['round_trips']} round trips, "
                          f"{row['redis_cpu_us']} us Redis CPU per request ({row['client_commands']} sent + "
                          f"{row['script_commands']} in scripts; {row['rps']} RPS, {bad} non-200)")
        return row


def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    workdir = Path(f"/tmp/bench-cluster-{uuid.uuid4().hex[:6]}")
    workdir.mkdir()
    total = args.requests * 2 * (len(PATHS) + len(NO_LEASE_PATHS))
    # A generator (the test helper): closing it stops the nodes.
    clusters = cast(Generator[RedisClusterNodes, None, None], own_redis_cluster("bench-cluster-"))
    progress.update(0.0, "store ops: forming the Redis Cluster (6 nodes)", force=True)
    cluster = next(clusters)
    rows: list[dict[str, Any]] = []
    backgrounds = {}
    try:
        masters = Masters(cluster)
        runner = Runner(masters, args, progress, total)
        for leases in (True, False):
            progress.update(runner.done / total, f"store ops: starting the gateway (leases {leases})", force=True)
            gw = start_gateway(workdir, f"gw-leases-{'on' if leases else 'off'}", cluster.url, leases, args.workers)
            try:
                url = f"http://127.0.0.1:{gw.port}"
                if leases:
                    vkey = create_virtual_key(url)
                # Warm every path once (connections, scripts, the embedding model, key records).
                for p in PATHS:
                    runner.send(url, vkey if p.governed else KEY, [_body(p.model, next(runner.texts), p.temperature)],
                                dict(p.headers))
                bg = runner.background(args.idle_seconds)
                backgrounds["leases on" if leases else "leases off"] = {
                    "commands_per_s": round(sum(bg.calls.values()), 2), "reads_per_s": round(bg.reads, 2),
                    "cpu_ms_per_s": round(bg.cpu_s * 1000, 2)}
                for p in (PATHS if leases else NO_LEASE_PATHS):
                    variant = "" if not p.governed else (", leases on" if leases else ", leases off")
                    rows.append(runner.path(url, vkey if p.governed else KEY, p, bg, variant))
            finally:
                gw.stop()
    finally:
        clusters.close()
    return {"requests_per_path": args.requests, "concurrency": args.concurrency, "workers": args.workers,
            "masters": 3, "replicas": 3, "background": backgrounds, "paths": rows, "logs": str(workdir)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--requests", type=int, default=300, help="requests per path and pass")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="Granian workers of the gateway")
    ap.add_argument("--idle-seconds", type=float, default=5.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    progress = Progress()
    doc = measure(args, progress)
    progress.close()
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
