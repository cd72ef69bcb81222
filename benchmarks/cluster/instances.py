"""Throughput of 1, 2 and 3 gateway instances behind nginx on one local Redis Cluster, every feature on,
and the store commands each request costs there.

Starts a Redis Cluster (six nodes, 3 masters + 3 replicas, as the tests do), the mock upstream and
nginx as the balancer; then for N = 1, 2, 3 starts the N-th gateway instance (the company
configuration: auth with a configured key, limits for every key, input policies; the cache, the
ledger, the audit log and metrics on; the store is the cluster), points nginx at the N instances,
warms up and runs wrk (closed loop) through nginx. Half the requests are the benchmark's unique
pass-through body (temperature 0.2: governed and audited, not looked up), half repeat one of 32
cacheable prompts (temperature 0: hits once warm). Store commands are the `INFO commandstats`
deltas of every master over the run plus one second of after-work, divided by the requests answered
(a pipeline's commands count one each; commands run inside the limit script are not counted by
Redis here).

    make bench-instances BENCH_ARGS="--seconds 20 --connections 128 --workers 1"

Writes benchmarks/results/<date>-<host>-cluster.{json,md}. Absolute figures are this machine's, at
that moment: on a small shared machine every instance competes with the others, nginx, wrk, the mock
and six Redis processes for the same cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import redis

from benchmarks.harness import procs
from benchmarks.harness import wrk as wrk_mod
from benchmarks.harness.scenarios import MODEL, SYSTEM_PROMPT, passthrough_body
from benchmarks.harness.targets import NGINX_CONF, gateway_command
from benchmarks.harness.variants import COMPANY_KEY, COMPANY_KEY_ENV, MASTER_KEY, company_config
from tests.conftest import RedisClusterNodes, own_redis_cluster

RESULTS = Path(__file__).resolve().parents[1] / "results"
HIT_PROMPTS = 32
# nginx in front of N gateways: the harness's nginx configuration with the mock's upstream replaced.
_UPSTREAM = "    upstream mock {{\n        server 127.0.0.1:{mock};\n        keepalive 512;\n    }}\n"


def _hit_bodies() -> list[bytes]:
    return [msgspec.json.encode({"model": MODEL, "temperature": 0, "max_tokens": 32, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"In one sentence, what does support ticket category {i} cover?"}]})
        for i in range(HIT_PROMPTS)]


def _mixed_script(nonce: str) -> str:
    """wrk's script: every other request one of the cacheable prompts, the rest the harness's unique
    pass-through body (its generated script, wrapped)."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {COMPANY_KEY}"}
    base = wrk_mod.script(passthrough_body(), headers, nonce)
    hits = "{" + ", ".join(wrk_mod.lua_string(b.decode()) for b in _hit_bodies()) + "}"
    return base + f"""
local hits = {hits}
local passthrough = request
local turn = 0
function request()
  turn = turn + 1
  if turn % 2 == 0 then return wrk.format(nil, nil, nil, hits[(turn / 2) % #hits + 1]) end
  return passthrough()
end
"""


def _wrk(url: str, connections: int, seconds: int, nonce: str) -> dict[str, Any]:
    binary = wrk_mod.binary()
    if binary is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="cluster-wrk-") as tmp:
        path = Path(tmp) / "mixed.lua"
        path.write_text(_mixed_script(nonce))
        out = subprocess.run([binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout=10s", "-s", str(path),
                              url + "/v1/chat/completions"], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr[-300:]}")
    return wrk_mod.parse(out.stdout)


def _masters(cluster: RedisClusterNodes) -> list[int]:
    return [p for p in cluster.alive() if cluster.client(p).execute_command("ROLE")[0] == b"master"]


def _commandstats(cluster: RedisClusterNodes) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for port in _masters(cluster):
        for name, stats in redis.Redis(port=port).info("commandstats").items():
            cmd = name.removeprefix("cmdstat_")
            if cmd not in ("info", "cluster|slots", "cluster|nodes", "cluster|info", "ping", "role"):
                total[cmd] += int(stats["calls"])
    return total


def _nginx(workdir: Path, gateway_ports: list[int]) -> procs.Server:
    conf_dir = workdir / f"nginx-{len(gateway_ports)}"
    conf_dir.mkdir()
    port = procs.free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(user=user, dir=conf_dir, mock=0, port=port)
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in gateway_ports)
    conf = conf.replace(_UPSTREAM.format(mock=0), "    upstream mock {\n" + servers + "        keepalive 512;\n    }\n")
    assert "127.0.0.1:0" not in conf, "the harness's nginx configuration changed shape"
    (conf_dir / "nginx.conf").write_text(conf)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [binary, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf_dir / "nginx.conf")]
    server = procs.start("nginx", cmd, port, workdir)
    procs.wait_for_port(port, 20, server.proc)
    return server


def _gateway(workdir: Path, name: str, mock_url: str, cluster: RedisClusterNodes, workers: int) -> procs.Server:
    home = workdir / name
    home.mkdir()
    config = company_config()
    config["store"] = {"redis_url": cluster.url}
    (home / "gateway.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    port = procs.free_port()
    gw = gateway_command()
    assert gw is not None, "the gateway package is not importable"
    cmd = [*gw, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--upstream",
           mock_url, "--config", str(home / "gateway.yaml")]
    env = {COMPANY_KEY_ENV: COMPANY_KEY, "GATEWAY_MASTER_KEY": MASTER_KEY, "GATEWAY_LOG_LEVEL": "warning"}
    server = procs.start(name, cmd, port, workdir, env=env, cwd=str(home))
    deadline = time.monotonic() + 60
    while procs.http_ok(f"http://127.0.0.1:{port}/readyz", None, {})[0] != 200:
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"{name} did not become ready; see {workdir}")
        time.sleep(0.2)
    return server


def _level(url: str, cluster: RedisClusterNodes, instances: int, args: argparse.Namespace) -> dict[str, Any]:
    _wrk(url, args.connections, args.warmup, uuid.uuid4().hex[:8])  # caches, leases, connections warm
    before = _commandstats(cluster)
    run = _wrk(url, args.connections, args.seconds, uuid.uuid4().hex[:8])
    time.sleep(1.0)  # after-work (ledger, corrections, audit batches) lands before the count
    delta = _commandstats(cluster) - before
    answered = max(1, run["requests"])
    per = {k: round(v / answered, 3) for k, v in delta.most_common()}
    row = {"instances": instances, "workers_each": args.workers, **run,
           "store_commands_per_request": round(sum(delta.values()) / answered, 2), "by_command": per}
    print(f"{instances} instance(s): {run['rps']} RPS, p50 {run['latency_ms']['p50']} ms, p99 "
          f"{run['latency_ms']['p99']} ms, errors {run['errors']}, {row['store_commands_per_request']} "
          f"store commands/request", flush=True)
    return row


def _markdown(doc: dict[str, Any]) -> str:
    rows = doc["levels"]
    base = rows[0]["rps"] or 1
    lines = [
        f"# Gateway instances on a Redis Cluster: {doc['run']}",
        "",
        f"Run `{doc['run']}` by `make bench-instances` ({doc['command']}) at {doc['started']} on "
        f"{doc['host']}: "
        f"{doc['cores']} cores, load average {doc['loadavg_before']} before the run. **The machine was shared "
        "with other sessions** and every process of the rig (the instances, nginx, wrk, the mock, six "
        "Redis nodes) competes for the same cores: absolute figures are noisy; the store commands per "
        "request are not.",
        "",
        f"Each instance: `gateway serve` with {doc['workers_each']} worker(s), the company configuration (auth with a "
        "configured key, limits for every key, input policies pii/injection/max_prompt; cache, ledger, audit "
        "log and metrics on), store `redis+cluster://` (3 masters + 3 replicas on this machine). nginx balances "
        f"(round robin, keep-alive). wrk: 1 thread, {doc['connections']} connections, {doc['seconds']} s per level "
        f"after {doc['warmup']} s of warm-up; half the requests unique pass-through (temperature 0.2), half one of "
        f"{HIT_PROMPTS} cacheable prompts (cache hits once warm); the mock answers after {doc['mock_latency_ms']} ms.",
        "",
        "| instances | RPS (2xx) | vs 1 | p50 ms | p99 ms | errors | store commands / request "
        "| top commands / request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top = ", ".join(f"{k} {v}" for k, v in list(r["by_command"].items())[:6])
        lines.append(f"| {r['instances']} | {r['rps']:,.0f} | {r['rps'] / base:.2f}x | {r['latency_ms']['p50']} | "
                     f"{r['latency_ms']['p99']} | {r['errors']} | {r['store_commands_per_request']} | {top} |")
    lines += ["", "Commands inside the limit script (EVALSHA) run on the master but are not counted by "
              "`commandstats` as separate calls; `make bench-cluster` (benchmarks/cluster/store_ops.py) "
              "counts them with MONITOR.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1, help="Granian workers per instance")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--mock-latency-ms", type=int, default=20)
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{platform.node() or 'host'}-cluster"
    workdir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    doc: dict[str, Any] = {"run": run, "started": started, "host": platform.node(), "cores": os.cpu_count(),
                           "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                           "command": f"--seconds {args.seconds} --connections {args.connections} "
                                      f"--workers {args.workers}",
                           "seconds": args.seconds, "warmup": args.warmup, "connections": args.connections,
                           "workers_each": args.workers, "mock_latency_ms": args.mock_latency_ms, "levels": []}
    servers: list[procs.Server] = []
    clusters = own_redis_cluster()
    cluster = next(clusters)
    try:
        gw = gateway_command()
        assert gw is not None
        mock_port = procs.free_port()
        mock = procs.start("mock", [*gw, "mock", "--host", "127.0.0.1", "--port", str(mock_port), "--latency-ms",
                                    str(args.mock_latency_ms)], mock_port, workdir)
        servers.append(mock)
        procs.wait_for_port(mock_port, 30, mock.proc)
        gateways: list[procs.Server] = []
        for n in range(1, args.instances + 1):
            gateways.append(_gateway(workdir, f"gw-{n}", f"http://127.0.0.1:{mock_port}", cluster, args.workers))
            servers.append(gateways[-1])
            balancer = _nginx(workdir, [g.port for g in gateways])
            try:
                doc["levels"].append(_level(f"http://127.0.0.1:{balancer.port}", cluster, n, args))
            finally:
                balancer.stop()
    finally:
        for s in reversed(servers):
            s.stop()
        clusters.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{run}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{run}.md").write_text(_markdown(doc))
    print(f"wrote {RESULTS / (run + '.md')}; process logs in {workdir}")


if __name__ == "__main__":
    main()
