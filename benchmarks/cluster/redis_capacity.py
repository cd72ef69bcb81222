"""One redis-server's capacity for the commands the gateway sends: redis-benchmark, one command at a time.

Starts a redis-server (no persistence, as the test helper does) with one replica attached, as a
cluster master has, pinned to core 0, and runs `redis-benchmark` pinned to core 1 (with the replica),
unpipelined (-P 1: every command its own round trip, the worst case; the gateway pipelines some of
them), 32 connections, random keys over 100k, with the value sizes the gateway writes (a cached
answer ~700 B, a 384-dim float32 vector 1,536 B, an audit record ~600 B). The limit script
(ADMIT_LUA, the real one) runs as EVALSHA over 4 windows of 60 one-second buckets and 2 budget
counters: a governed request of a key in a team. Two figures per command:

- ops/s: what redis-benchmark reports (its client shares the machine: a lower bound of the server);
- server CPU per command: the server's `used_cpu_user + used_cpu_sys` (getrusage) over the run divided
  by the commands, and 1e6 / that = what one fully busy server core would do.

    python -m benchmarks.cluster.redis_capacity [--requests 50000]   # prints JSON
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import time
from collections.abc import Generator
from typing import Any, cast

import redis

from gateway.bench.progress import Progress
from gateway.governance.counters import ADMIT_LUA
from tests.conftest import RedisServer, own_redis_server

SYNC_BATCH = 60  # entries a sync reads per shard at the seed's 1,900 writes/s: 1,900 / 8 shards / 4 syncs/s
ANSWER = "a" * 700  # a cached chat answer (envelope + short completion), as written by a miss
VECTOR = "v" * 1536  # 384 float32
AUDIT = "e" * 600
WINDOWS = ["gw:rl:{gov}:k:KEY:r", "gw:rl:{gov}:k:KEY:t", "gw:rl:{gov}:team:r", "gw:rl:{gov}:team:t"]
CAPS = ["gw:bud:{gov}:k:KEY:d", "gw:bud:{gov}:team:m"]


def commands(sha: str) -> list[tuple[str, list[str]]]:
    """(what, argv) per command the paths send (benchmarks/cluster/store_ops.py names them)."""
    r = "__rand_int__"
    admit = ["EVALSHA", sha, str(len(WINDOWS) + len(CAPS)), *WINDOWS, *CAPS, "60", str(len(WINDOWS)), str(len(CAPS))]
    for _ in WINDOWS:
        admit += ["1000000000000", "1"]
    for _ in CAPS:
        admit += ["1000000000000", "1", "86400"]
    return [
        ("GET (key record, entry)", ["GET", f"gw:c:e:{{p}}{r}"]),
        ("MGET 2 keys (lookup: intent + entry)", ["MGET", f"gw:c:i:{{p}}{r}", f"gw:c:e:{{p}}{r}"]),
        ("SET 700 B PX (entry write)", ["SET", f"gw:c:e:{{p}}{r}", ANSWER, "PX", "86400000"]),
        ("SET NX PX (shared-flight lease)", ["SET", f"gw:sf:{r}", "1", "NX", "PX", "30000"]),
        ("DEL (lease release)", ["DEL", f"gw:sf:{r}"]),
        ("ZADD (LRU touch)", ["ZADD", "gw:c:lru", "1733212345", f"m{r}"]),
        ("LPUSH 100 B (recent list)", ["LPUSH", "gw:c:n:{p}", "r" * 100]),
        ("LTRIM (recent list)", ["LTRIM", "gw:c:n:{p}", "0", "63"]),
        ("PEXPIRE", ["PEXPIRE", f"gw:c:e:{{p}}{r}", "86400000"]),
        ("HSET 1.5 KB (vector)", ["HSET", "gw:v:{p}", f"m{r}", VECTOR]),
        ("XADD 1.5 KB MAXLEN ~ (vector log)", ["XADD", "gw:vlog", "MAXLEN", "~", "100000", "*", "p", "x", "m", "y",
                                              "v", VECTOR]),
        ("XADD 600 B MAXLEN ~ (audit)", ["XADD", "gw:audit", "MAXLEN", "~", "100000", "*", "e", AUDIT]),
        ("XRANGE COUNT 1 (log sync, nothing new)", ["XRANGE", "gw:vlog", "-", "+", "COUNT", "1"]),
        (f"XRANGE COUNT {SYNC_BATCH} (log sync, {SYNC_BATCH} new vectors)",
         ["XRANGE", "gw:vlog", "-", "+", "COUNT", str(SYNC_BATCH)]),
        ("INCRBY (ledger)", ["INCRBY", f"gw:ledger:{r}", "5"]),
        ("HGETALL small (generation refresh)", ["HGETALL", "gw:cache-gen"]),
        ("EVALSHA admit (4 windows x 60 buckets, 2 budgets)", admit),
    ]


def _pin(pid: int, core: str) -> None:
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-p", "-c", core, str(pid)], check=False, stdout=subprocess.DEVNULL)


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _wait_link(client: redis.Redis, timeout: float = 30.0) -> None:
    """Until the master lists its replica online (the replica's first sync is done)."""
    deadline = time.monotonic() + timeout
    while "online" not in str(client.info("replication").get("slave0", {})):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replica did not come online: {client.info('replication')}")
        time.sleep(0.05)


def _fill_windows(client: redis.Redis) -> None:
    """The limit windows as a key in steady use holds them: a bucket for each of the last 50 seconds
    (the script drops buckets older than its 60 s window, so this is refilled right before its run)."""
    now = int(client.time()[0])
    for key in WINDOWS:
        client.delete(key)
        client.hset(key, mapping={str(s): 1 for s in range(now - 50, now + 1)})


def _prefill(client: redis.Redis) -> str:
    client.set(CAPS[0], 0)
    client.set(CAPS[1], 0)
    client.hset("gw:cache-gen", mapping={"*": "1", "key:app": "1"})
    for i in range(1000):
        client.xadd("gw:vlog", {"p": "x", "m": str(i), "v": VECTOR})
    return str(client.script_load(ADMIT_LUA))


def _benchmark(port: int, argv: list[str], n: int, pipeline: int) -> float:
    cmd = ["redis-benchmark", "-p", str(port), "-c", "32", "-n", str(n), "-P", str(pipeline), "-r", "100000",
           "-q", "--csv", *argv]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    return float(rows[-1][1])


def rate_curve(port: int, rates: tuple[int, ...] = (200, 1_000, 5_000, 0)) -> list[dict[str, Any]]:
    """Server CPU per GET at fixed low rates (one connection, a paced loop; 0 = as fast as it goes).
    A server woken for every command on a busy machine pays far more per command than a busy one:
    what the cluster run's per-request CPU, measured at a few hundred commands/s, includes."""
    client = redis.Redis(port=port)
    client.set("gw:rate", "x")
    out = []
    for rate in rates:
        n = 1_000 if rate else 20_000
        cpu0, t0 = _cpu(client), time.monotonic()
        for k in range(n):
            client.get("gw:rate")
            if rate:
                ahead = t0 + (k + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # the pacing itself: what a low rate is
        took = time.monotonic() - t0
        cpu = _cpu(client) - cpu0
        out.append({"target_per_s": rate or None, "ops_per_s": round(n / took),
                    "server_cpu_us": round(cpu * 1e6 / n, 1)})
    return out


def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark is not installed (apt-get install -y redis-tools)")
    servers = cast(Generator[RedisServer, None, None], own_redis_server("bench-capacity-"))
    replicas = cast(Generator[RedisServer, None, None], own_redis_server("bench-capacity-replica-"))
    server, replica = next(servers), next(replicas)
    rows = []
    try:
        _pin(server.proc.pid, "0")
        _pin(replica.proc.pid, "1")
        client = redis.Redis(port=server.port)
        # A master with its replica, as in the cluster: every write is also sent down the link.
        redis.Redis(port=replica.port).replicaof("127.0.0.1", server.port)
        _wait_link(client)
        sha = _prefill(client)
        plan = [(what, argv, 1) for what, argv in commands(sha)]
        plan += [("GET, pipelined 16", ["GET", "gw:c:e:{p}__rand_int__"], 16),
                 ("SET 700 B PX, pipelined 16", ["SET", "gw:c:e:{p}__rand_int__", ANSWER, "PX", "86400000"], 16)]
        for i, (what, argv, pipeline) in enumerate(plan):
            progress.update(i / len(plan), f"redis-benchmark: {what}", force=True)
            if argv[0] == "EVALSHA":
                _fill_windows(client)
            client.config_resetstat()
            cpu0, t0 = _cpu(client), time.monotonic()
            rps = _benchmark(server.port, argv, args.capacity_requests, pipeline)
            took = time.monotonic() - t0
            cpu = _cpu(client) - cpu0
            calls = sum(int(v["calls"]) for k, v in client.info("commandstats").items()
                        if k.removeprefix("cmdstat_").split("|")[0] == argv[0].lower())
            per_us = cpu * 1e6 / max(calls, 1)
            rows.append({"command": what, "name": argv[0], "pipeline": pipeline, "ops_per_s": round(rps),
                         "server_cpu_us": round(per_us, 2), "ops_per_core_s": round(1e6 / per_us) if per_us else None,
                         "server_busy": round(cpu / took, 2), "calls": calls})
            progress.log(f"redis-benchmark: {what}: {rps:,.0f} ops/s, {per_us:.1f} us server CPU each "
                         f"(server {cpu / took:.0%} busy)")
        progress.update(1.0, "redis-benchmark: CPU per GET at low rates", force=True)
        curve = rate_curve(server.port)
        for r in curve:
            progress.log(f"redis-benchmark: GET at {r['ops_per_s']:,}/s, one connection: {r['server_cpu_us']} us "
                         "server CPU each")
        version = client.info("server")["redis_version"]
    finally:
        replicas.close()
        servers.close()
    return {"redis_version": version, "connections": 32, "requests": args.capacity_requests, "commands": rows,
            "rate_curve": curve}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--capacity-requests", type=int, default=50_000,
                    help="redis-benchmark requests per command")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    progress = Progress()
    doc = measure(ap.parse_args(), progress)
    progress.close()
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
