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
Redis here). CPU per request is taken per part (the instances, the Redis nodes, nginx, the mock)
and for the whole machine (/proc/stat).

Each instance runs in a cgroup limited to `--cpu-per-instance` cores (0.35), as a pod with
`resources.limits.cpu` would: on a 2-core machine one unlimited instance already fills what wrk,
nginx, the mock and six Redis nodes leave, so without the limit the table would show this machine's
cores running out, not how the gateway scales out. `--cpu-per-instance 0` runs them unlimited.

    make bench-instances BENCH_ARGS="--seconds 20 --connections 128 --workers 1 --cpu-per-instance 0.35"

Writes benchmarks/results/<date>-<host>-cluster[-unlimited].{json,md}. Absolute figures are this
machine's, at that moment.
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


class CpuSlice:
    """A CPU limit for one instance, as a pod's `resources.limits.cpu` is: a cgroup with a CFS quota
    (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`). Each instance gets the same slice, so on a small
    machine N instances can be compared before their sum reaches the cores the rig leaves."""

    def __init__(self, name: str, cores: float, period_us: int = 20_000) -> None:
        quota = max(1_000, int(cores * period_us))
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.path = v2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {period_us}")
        else:
            self.path = Path("/sys/fs/cgroup/cpu") / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def wrap(self, cmd: list[str]) -> list[str]:
        """The command, started inside the cgroup (its workers, forked later, inherit it)."""
        procs_file = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > "{procs_file}" && exec "$@"', "sh", *cmd]

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass

    @staticmethod
    def available() -> bool:
        for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")):
            if os.access(base, os.W_OK) and ((base / "cgroup.controllers").exists() or
                                              (base / "cpu.cfs_quota_us").exists()):
                return True
        return False


def _gateway(workdir: Path, name: str, mock_url: str, cluster: RedisClusterNodes, workers: int,
             cpu: CpuSlice | None) -> procs.Server:
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
    server = procs.start(name, cpu.wrap(cmd) if cpu else cmd, port, workdir, env=env, cwd=str(home))
    deadline = time.monotonic() + 60
    while procs.http_ok(f"http://127.0.0.1:{port}/readyz", None, {})[0] != 200:
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"{name} did not become ready; see {workdir}")
        time.sleep(0.2)
    return server


def _redis_cpu_s(cluster: RedisClusterNodes) -> float:
    total = 0.0
    for port in cluster.alive():
        info = cluster.client(port).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def _machine_busy_s() -> float:
    """CPU seconds every core spent not idle, from /proc/stat (the whole machine, wrk included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu(gateways: list[procs.Server], balancer: procs.Server, mock: procs.Server,
         cluster: RedisClusterNodes) -> dict[str, float]:
    return {"gateways": sum(g.cpu_s() for g in gateways), "nginx": balancer.cpu_s(), "mock": mock.cpu_s(),
            "redis": _redis_cpu_s(cluster), "machine": _machine_busy_s()}


def _level(url: str, cluster: RedisClusterNodes, instances: int, args: argparse.Namespace,
           parts: tuple[list[procs.Server], procs.Server, procs.Server]) -> dict[str, Any]:
    gateways, balancer, mock = parts
    _wrk(url, args.connections, args.warmup, uuid.uuid4().hex[:8])  # caches, leases, connections warm
    before = _commandstats(cluster)
    cpu_before, t0 = _cpu(gateways, balancer, mock, cluster), time.monotonic()
    run = _wrk(url, args.connections, args.seconds, uuid.uuid4().hex[:8])
    cpu_after, elapsed = _cpu(gateways, balancer, mock, cluster), time.monotonic() - t0
    time.sleep(1.0)  # after-work (ledger, corrections, audit batches) lands before the count
    delta = _commandstats(cluster) - before
    answered = max(1, run["requests"])
    per = {k: round(v / answered, 3) for k, v in delta.most_common()}
    cpu_ms = {k: round((cpu_after[k] - cpu_before[k]) * 1000 / answered, 3) for k in cpu_before}
    busy_cores = round((cpu_after["machine"] - cpu_before["machine"]) / elapsed, 2)
    row = {"instances": instances, "workers_each": args.workers, **run,
           "store_commands_per_request": round(sum(delta.values()) / answered, 2), "by_command": per,
           "cpu_ms_per_request": cpu_ms, "machine_busy_cores": busy_cores}
    print(f"{instances} instance(s): {run['rps']} RPS, p50 {run['latency_ms']['p50']} ms, p99 "
          f"{run['latency_ms']['p99']} ms, errors {run['errors']}, {row['store_commands_per_request']} "
          f"store commands/request, CPU ms/request {cpu_ms}, machine busy {busy_cores} of {os.cpu_count()} "
          "cores", flush=True)
    return row


def _markdown(doc: dict[str, Any]) -> str:
    rows = doc["levels"]
    base = rows[0]["rps"] or 1
    lines = [
        f"# Gateway instances on a Redis Cluster: {doc['run']}",
        "",
        f"Run `{doc['run']}` by `make bench-instances` ({doc['command']}) at {doc['started']} on "
        f"{doc['host']}: "
        f"{doc['cores']} cores, load average {doc['loadavg_before']} before the run. Every process of the rig "
        "(the instances, nginx, wrk, the mock, six Redis nodes) shares the same cores: absolute figures are "
        "noisy; the store commands per request are not.",
        "",
        f"Each instance: `gateway serve` with {doc['workers_each']} worker(s), the company configuration (auth with a "
        "configured key, limits for every key, input policies pii/injection/max_prompt; cache, ledger, audit "
        "log and metrics on), store `redis+cluster://` (3 masters + 3 replicas on this machine), "
        + (f"limited to {doc['cpu_per_instance']} of a core (a cgroup CFS quota, as a pod's `limits.cpu`: N "
           "instances together stay below the cores the rig leaves, so the table shows how throughput grows "
           "with instances rather than where this machine runs out). " if doc.get("cpu_per_instance") else
           "no CPU limit (every instance competes for the machine's cores with the rig). ")
        + "nginx balances "
        f"(round robin, keep-alive). wrk: 1 thread, {doc['connections']} connections, {doc['seconds']} s per level "
        f"after {doc['warmup']} s of warm-up; half the requests unique pass-through (temperature 0.2), half one of "
        f"{HIT_PROMPTS} cacheable prompts (cache hits once warm); the mock answers after {doc['mock_latency_ms']} ms.",
        "",
        "| instances | RPS (2xx) | vs 1 | p50 ms | p99 ms | errors | machine busy (cores) | CPU ms / request: "
        "gateways, Redis, nginx, mock, rest | store commands / request | top commands / request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top = ", ".join(f"{k} {v}" for k, v in list(r["by_command"].items())[:6])
        c = r["cpu_ms_per_request"]
        rest = c["machine"] - c["gateways"] - c["redis"] - c["nginx"] - c["mock"]  # wrk, the kernel's softirq
        cpu = f"{c['gateways']:.2f}, {c['redis']:.2f}, {c['nginx']:.2f}, {c['mock']:.2f}, {rest:.2f}"
        lines.append(f"| {r['instances']} | {r['rps']:,.0f} | {r['rps'] / base:.2f}x | {r['latency_ms']['p50']} | "
                     f"{r['latency_ms']['p99']} | {r['errors']} | {r['machine_busy_cores']} of {doc['cores']} | "
                     f"{cpu} | {r['store_commands_per_request']} | {top} |")
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
    ap.add_argument("--cpu-per-instance", type=float, default=0.35,
                    help="each instance's CPU limit in cores, as a pod's limits.cpu (a cgroup quota); 0: none")
    args = ap.parse_args()
    if args.cpu_per_instance and not CpuSlice.available():
        raise SystemExit("no writable cgroup cpu controller here: run as root, or pass --cpu-per-instance 0")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{platform.node() or 'host'}-cluster"
    run += "" if args.cpu_per_instance else "-unlimited"
    workdir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    doc: dict[str, Any] = {"run": run, "started": started, "host": platform.node(), "cores": os.cpu_count(),
                           "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                           "command": f"--seconds {args.seconds} --connections {args.connections} "
                                      f"--workers {args.workers} --cpu-per-instance {args.cpu_per_instance}",
                           "cpu_per_instance": args.cpu_per_instance,
                           "seconds": args.seconds, "warmup": args.warmup, "connections": args.connections,
                           "workers_each": args.workers, "mock_latency_ms": args.mock_latency_ms, "levels": []}
    servers: list[procs.Server] = []
    slices: list[CpuSlice] = []
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
            if args.cpu_per_instance:
                slices.append(CpuSlice(f"gw-bench-{os.getpid()}-{n}", args.cpu_per_instance))
            gateways.append(_gateway(workdir, f"gw-{n}", f"http://127.0.0.1:{mock_port}", cluster, args.workers,
                                     slices[-1] if slices else None))
            servers.append(gateways[-1])
            balancer = _nginx(workdir, [g.port for g in gateways])
            try:
                doc["levels"].append(_level(f"http://127.0.0.1:{balancer.port}", cluster, n, args,
                                            (gateways, balancer, mock)))
            finally:
                balancer.stop()
    finally:
        for server in reversed(servers):
            server.stop()
        for piece in slices:
            piece.remove()
        clusters.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{run}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{run}.md").write_text(_markdown(doc))
    print(f"wrote {RESULTS / (run + '.md')}; process logs in {workdir}")


if __name__ == "__main__":
    main()
