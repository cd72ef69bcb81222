"""`make bench-cluster`: store operations per request on a local Redis Cluster, one redis-server's
capacity, the per-worker vector index; then the capacity plan computed from them.

    python -m benchmarks.cluster [--parts store,capacity,vector] [--requests 300] ...

Writes benchmarks/cluster/results.json and results.md. A part left out of `--parts` keeps its
figures from the previous results.json (the plan is recomputed from what is there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster import redis_capacity, store_ops
from gateway.bench.progress import Progress, fmt_seconds

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "results.md"

# The seed whitepaper's fleet (its scaling table: "HPA auto (2-64): up to ~1,900 RPS all-miss, up to
# ~3,800 RPS mixed (50% cache)"), and the chart's pod: 2 CPUs, so 2 workers.
SEED_PODS = 64
SEED_ALL_MISS_RPS = 1_900
SEED_MIXED_RPS = 3_800
WORKERS_PER_POD = 2
TARGET_UTILISATION = 0.5  # a master planned at half of one core: failover, bursts, slot skew
SYNCS_PER_WORKER_S = 4  # the vector-log sync runs at most every 0.25 s per worker (semantic.py)
VLOG_ENTRY_BYTES = 1_700  # a log entry: the 1,536-byte vector, partition, member, stream id


# ------------------------------------------------------------------------------------------ plan


def _batch(row: dict[str, Any]) -> int:
    """Entries an `XRANGE COUNT n` row of the capacity table reads (1 for any other command)."""
    words = row["command"].split()
    return int(words[2]) if row["command"].startswith("XRANGE COUNT") else 1


def cost_table(capacity: dict[str, Any]) -> dict[str, float]:
    """Server CPU microseconds per command, by name, unpipelined (the most expensive variant of a
    name: SET with a 700 B value over SET NX, the 1.5 KB XADD over the audit one). XRANGE is the
    sync that finds nothing new; what each new entry adds to it is priced apart (`entry_cost_us`)."""
    out: dict[str, float] = {}
    for row in capacity["commands"]:
        if row["pipeline"] == 1 and _batch(row) == 1:
            out[row["name"].upper()] = max(out.get(row["name"].upper(), 0.0), row["server_cpu_us"])
    return out


def entry_cost_us(capacity: dict[str, Any]) -> float:
    """Server CPU per vector-log entry a sync reads: (XRANGE of a batch - XRANGE of one) / (batch - 1)."""
    one = batch = None
    for row in capacity["commands"]:
        if row["name"] == "XRANGE":
            if _batch(row) == 1:
                one = row["server_cpu_us"]
            else:
                batch = (_batch(row), row["server_cpu_us"])
    if one is None or batch is None:
        return 0.0
    return max(0.0, (batch[1] - one) / (batch[0] - 1))


def _cost(name: str, costs: dict[str, float]) -> float:
    if name in costs:
        return costs[name]
    singles = [v for k, v in costs.items() if k != "EVALSHA"]
    return max(singles)  # a command not benchmarked: priced as the dearest single command


def path_cost_us(row: dict[str, Any], costs: dict[str, float]) -> float:
    """Modelled server CPU per request: every command the gateway sent (MONITOR's count, scripts'
    inner commands excluded: EVALSHA's own price includes them) at its unpipelined price, so a
    pipelined command is charged a whole round trip (conservative)."""
    total = 0.0
    for name, per in row["by_key"].items():
        if name.endswith("(in script)"):
            continue
        total += per * _cost(name.split(" ", 1)[0], costs)
    return total


def _row(store: dict[str, Any], name: str) -> dict[str, Any]:
    for r in store["paths"]:
        if r["path"] == name:
            return r
    raise KeyError(name)


def plan(store: dict[str, Any], capacity: dict[str, Any]) -> dict[str, Any]:
    costs = cost_table(capacity)
    # One core's commands/s for the mix the gateway sends (unpipelined prices), and redis-benchmark's
    # own figure (its client on the same small machine: a floor, not the server's limit).
    singles = [r for r in capacity["commands"] if r["pipeline"] == 1 and r["name"] != "EVALSHA" and _batch(r) == 1]
    mean_us = sum(r["server_cpu_us"] for r in singles) / len(singles)
    client_ops = statistics.median(r["ops_per_s"] for r in singles)
    sync_us = 8 * costs["XRANGE"]  # one sync: an XRANGE per log shard
    per_entry_us = entry_cost_us(capacity)  # and every worker reads every new vector once
    refresh_us = costs["HGETALL"]  # the generation refresh, once a second per worker

    def fleet(label: str, rps: float, hit_share: float, pods: int, leases: bool) -> dict[str, Any]:
        suffix = ", leases on" if leases else ", leases off"
        miss, hit = _row(store, "governed miss" + suffix), _row(store, "governed hit" + suffix)
        per_req_us = hit_share * path_cost_us(hit, costs) + (1 - hit_share) * path_cost_us(miss, costs)
        commands = hit_share * (hit["client_commands"] + hit["script_commands"]) + (1 - hit_share) * (
            miss["client_commands"] + miss["script_commands"])
        sent = hit_share * hit["client_commands"] + (1 - hit_share) * miss["client_commands"]
        trips = hit_share * hit["round_trips"] + (1 - hit_share) * miss["round_trips"]
        workers = pods * WORKERS_PER_POD
        writes = rps * (1 - hit_share)  # every miss writes one vector to the log
        timed_us = workers * (SYNCS_PER_WORKER_S * sync_us + refresh_us + writes * per_entry_us)
        cores = (rps * per_req_us + timed_us) / 1e6
        masters = max(3, math.ceil(cores / TARGET_UTILISATION))
        return {"scenario": label, "rps": rps, "hit_share": hit_share, "pods": pods, "workers": workers,
                "leases": leases, "server_us_per_request": round(per_req_us, 1),
                "commands_per_s": round(rps * commands + workers * (SYNCS_PER_WORKER_S * 8 + 1)),
                "sent_per_s": round(rps * sent + workers * (SYNCS_PER_WORKER_S * 8 + 1)),
                "round_trips_per_s": round(rps * trips + workers * (SYNCS_PER_WORKER_S * 3 + 1)),
                "redis_cores": round(cores, 2), "log_sync_cores": round(timed_us / 1e6, 2), "masters": masters,
                "utilisation_per_master": round(cores / masters, 2),
                "headroom": round(masters / cores, 1) if cores else None,
                "vlog_egress_mb_s": round(writes * workers * VLOG_ENTRY_BYTES / 1e6),
                "lru_zadd_per_s": round(rps), "lru_master_share": round(rps * costs["ZADD"] / 1e6, 2)}

    rows = []
    for scale, tag in ((1, ""), (10, " x10")):
        for leases in (True, False):
            rows.append(fleet(f"seed all-miss{tag}", SEED_ALL_MISS_RPS * scale, 0.0, SEED_PODS, leases))
            rows.append(fleet(f"seed mixed 50% hits{tag}", SEED_MIXED_RPS * scale, 0.5, SEED_PODS, leases))
        if scale > 1:  # the seed's own pod size: ten times the pods, so ten times the per-worker syncs
            rows.append(fleet(f"seed mixed 50% hits{tag}, {SEED_PODS * scale} pods", SEED_MIXED_RPS * scale, 0.5,
                              SEED_PODS * scale, True))
    admit = costs["EVALSHA"]
    return {"assumptions": {
        "target_utilisation": TARGET_UTILISATION, "workers_per_pod": WORKERS_PER_POD,
        "syncs_per_worker_s": SYNCS_PER_WORKER_S, "mean_single_command_us": round(mean_us, 1),
        "ops_per_core_s": round(1e6 / mean_us), "planning_ops_per_master_s": round(TARGET_UTILISATION * 1e6 / mean_us),
        "redis_benchmark_median_ops_s": round(client_ops), "admit_us": admit,
        "one_team_max_rps_leases_off": round(TARGET_UTILISATION * 1e6 / admit),
        "sync_us": round(sync_us, 1), "refresh_us": round(refresh_us, 1), "entry_us": round(per_entry_us, 2)},
        "fleet": rows}


# ------------------------------------------------------------------------------------- markdown


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Redis Cluster: store operations per request, one server's capacity, the vector index",
        "",
        f"`make bench-cluster` (`python -m benchmarks.cluster`; last run {doc['date']}, "
        f"`{doc.get('command', '')}`) on `{m['host']}`: {m['cores']} "
        f"cores ({m['cpu']}), {m['memory_gb']} GB, {m['os']}, Python {m['python']}, Redis "
        f"{doc['capacity']['redis_version']}; "
        f"load average {m['loadavg_before']} before the run (**a shared machine**: a training job at nice 19 and "
        "other sessions ran beside it; the bench ran at nice 10). Counts do not depend on the machine; times and "
        "ops/s do. The plan that uses these figures: [docs/scale.md](../../docs/scale.md).",
        "",
    ]
    s = doc["store"]
    lines += [
        "## Store operations per request, by path",
        "",
        f"Measured {s.get('measured_at', doc['date'])}.",
        "",
        f"A local Redis Cluster (six `redis-server --cluster-enabled yes`, {s['masters']} masters + {s['replicas']} "
        f"replicas, `redis-cli --cluster create`), one `gateway serve` with {s['workers']} workers on it "
        "(`redis+cluster://`), the built-in mock as upstream (60 ms), auth with a configured key; "
        f"{s['requests_per_path']} requests per path and pass, {s['concurrency']} at a time. "
        "Each path runs twice:",
        "",
        "- **commands** and **round trips**: pass 1, `INFO commandstats` deltas summed over the three masters "
        "(every command executed, inside scripts too) and `total_reads_processed` deltas (one per socket read: a "
        "pipeline arriving at once is one, each master's part of a cross-slot pipeline one each), minus the "
        "benchmark's own INFO calls and the idle background (measured with the gateway idle: "
        + ", ".join(f"{k}: {v['commands_per_s']} commands/s, {v['reads_per_s']} reads/s"
                    for k, v in s["background"].items())
        + ", replica acks and the 1/s generation refresh of each worker); **Redis CPU** is the masters' "
        "`used_cpu_user + used_cpu_sys` over the pass, minus the idle rate (low load: an upper bound);",
        "- **sent / in scripts**: pass 2 with MONITOR on every master: what the gateway sent, and what ran inside "
        "the limit scripts;",
        "- the **vector-log sync** (one XRANGE per log shard, 8 shards, every 0.25 s per worker while lookups run; "
        "one pipeline, one round trip per master) grows with workers, not requests: it is left out of the per-request "
        "figures and given per worker and second.",
        "",
        "| path | what | commands | sent | in scripts | round trips | Redis CPU us | log sync / worker / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["paths"]:
        lines.append(f"| {r['path']} | {r['what']} | {r['commands']} | {r['client_commands']} | {r['script_commands']} "
                     f"| {r['round_trips']} | {r['redis_cpu_us']:.0f} | {r['sync_commands_per_worker_s']} |")
    lines += ["", "Per command kind (MONITOR, per request; key families up to the hash tag):", ""]
    lines += ["| path | commands by key |", "|---|---|"]
    for r in s["paths"]:
        keys = ", ".join(f"{k} {_fmt(v)}" for k, v in r["by_key"].items())
        lines.append(f"| {r['path']} | {keys} |")
    lines += ["", "Non-200 answers: " + (", ".join(f"{r['path']} {r['non_200']}" for r in s["paths"] if r["non_200"])
                                         or "none") + ".", ""]

    c = doc["capacity"]
    lines += [
        "## One redis-server's capacity (redis-benchmark)",
        "",
        f"Measured {c.get('measured_at', doc['date'])}.",
        "",
        "A redis-server with one replica attached (as a cluster master has) pinned to core 0, "
        f"`redis-benchmark -c {c['connections']} -n {c['requests']} -r 100000` pinned to core 1 (with the "
        "replica), one command at a time, unpipelined unless stated; values of the sizes the gateway writes; the "
        "limit script is the real ADMIT_LUA over 4 windows of 60 buckets and 2 budgets. **ops/s** is "
        "redis-benchmark's figure (its client shares the loaded machine: the server was far from busy, so this is "
        "a floor); **server CPU** is the server's getrusage over the run per command, and **per core** = 1e6 / "
        "that.",
        "",
        "| command | pipeline | ops/s | server CPU us | ops/s per server core | server busy |",
        "|---|---|---|---|---|---|",
    ]
    for r in c["commands"]:
        lines.append(f"| {r['command']} | {r['pipeline']} | {r['ops_per_s']:,} | {r['server_cpu_us']} | "
                     f"{r['ops_per_core_s']:,} | {r['server_busy']:.0%} |")
    lines.append("")
    if c.get("rate_curve"):
        lines += ["The same server's CPU per GET at fixed low rates (one connection, a paced loop): a server woken "
                  "for every command on a busy machine pays several times what a busy one does, which is why the "
                  "cluster run above (a few hundred commands/s per master) shows more Redis CPU per request than "
                  "its commands cost at load:", "",
                  "| GETs/s | server CPU us per GET |", "|---|---|"]
        lines += [f"| {r['ops_per_s']:,} | {r['server_cpu_us']} |" for r in c["rate_curve"]]
        lines.append("")

    if doc.get("plan"):
        a = doc["plan"]["assumptions"]
        lines += [
            "## The plan's arithmetic",
            "",
            f"Each request's server CPU = the commands the gateway sent (MONITOR) at their unpipelined price above "
            f"(EVALSHA at {a['admit_us']} us, its inner commands included); plus, per worker, "
            f"{a['syncs_per_worker_s']} log syncs a second ({a['sync_us']} us each) and one generation refresh "
            f"({a['refresh_us']} us), and {a.get('entry_us', 0)} us for every new vector it reads from the log "
            "(each miss's vector is read by every worker). Masters "
            f"= that CPU / {a['target_utilisation']} core, at least 3. Every request governed (the company "
            f"configuration); leases on = far from the limits, off = every admit a script (near a limit).",
            "",
            "| scenario | RPS | pods | leases | server us / request | commands/s | round trips/s | Redis cores "
            "| masters | per master | vector-log egress MB/s | LRU ZADD share of a core |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in doc["plan"]["fleet"]:
            lines.append(f"| {f['scenario']} | {f['rps']:,} | {f['pods']} | {'on' if f['leases'] else 'off'} | "
                         f"{f['server_us_per_request']} | {f['commands_per_s']:,} | {f['round_trips_per_s']:,} | "
                         f"{f['redis_cores']} | {f['masters']} | {f['utilisation_per_master']:.0%} | "
                         f"{f['vlog_egress_mb_s']:,} | {f['lru_master_share']:.0%} |")
        lines.append("")

    v = doc["vector"]
    lines += [
        "## The per-worker vector index",
        "",
        f"Measured {v.get('measured_at', doc['date'])}.",
        "",
        f"The gateway's own `_Partition` (gateway/cache/semantic.py), {v['dim']}-dim {v['dtype']}, random unit "
        f"vectors, KNN k={v['k']} (`_Partition.knn`), numpy {v['numpy']}, BLAS threads {v['blas_threads']}. "
        "**held** = the matrices as allocated (rows grow by doubling) + the member list, dict and strings; "
        "**resident** = RSS growth (only rows written count).",
        "",
        "| entries | partition size | partitions | held MB | held MB per 100k | resident MB | KNN p50 ms "
        "| KNN p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in v["rows"]:
        lines.append(f"| {r['entries']:,} | {r['per_partition']:,} | {r['partitions']:,} | {r['allocated_mb']:,} | "
                     f"{r['allocated_mb_per_100k']} | {r['rss_mb']:,} | {r['knn_p50_ms']} | {r['knn_p99_ms']} |")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ run


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0.0
    return {"host": platform.node(), "cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def _vector(sizes: str, progress: Progress) -> dict[str, Any]:
    progress.update(0.0, f"vector index: {sizes} entries (one BLAS thread)", force=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "benchmarks.cluster.vector_index", "--sizes", sizes, "--out", out.name],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        return dict(json.loads(Path(out.name).read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="store,capacity,vector")
    ap.add_argument("--render", action="store_true", help="measure nothing: the plan and results.md again")
    ap.add_argument("--vector-sizes", default="10000,100000,1000000")
    store_ops.add_arguments(ap)
    redis_capacity.add_arguments(ap)
    args = ap.parse_args()
    parts = set() if args.render else set(args.parts.split(","))
    unknown = parts - {"store", "capacity", "vector"}
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))}")
    doc: dict[str, Any] = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    missing = {"store", "capacity", "vector"} - parts - set(doc)
    if missing:
        ap.error(f"no earlier results for {', '.join(sorted(missing))}: include them in --parts")
    started = time.monotonic()
    if parts:
        doc["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        doc["machine"] = _machine()
        doc["command"] = " ".join(sys.argv[1:]) or "(defaults)"
    progress = Progress()
    now = doc.get("date", "")
    try:
        if "store" in parts:
            doc["store"] = {"measured_at": now, **store_ops.measure(args, progress)}
        if "capacity" in parts:
            doc["capacity"] = {"measured_at": now, **redis_capacity.measure(args, progress)}
        if "vector" in parts:
            doc["vector"] = {"measured_at": now, **_vector(args.vector_sizes, progress)}
            for r in doc["vector"]["rows"]:
                progress.log(f"vector index: {r['entries']:,} entries in partitions of {r['per_partition']:,}: "
                             f"{r['allocated_mb']:,} MB held, KNN p50 {r['knn_p50_ms']} ms")
    finally:
        progress.close()
    doc["plan"] = plan(doc["store"], doc["capacity"])
    RESULTS_JSON.write_text(json.dumps(doc, indent=2) + "\n")
    RESULTS_MD.write_text(markdown(doc))
    progress.log(f"bench-cluster: finished in {fmt_seconds(time.monotonic() - started)}; wrote {RESULTS_MD} "
                 f"and {RESULTS_JSON.name}")


if __name__ == "__main__":
    main()
