"""`make bench-cluster`'s arithmetic: MONITOR lines, deltas minus the background, the plan, the report."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.cluster import __main__ as cluster_main
from benchmarks.cluster import store_ops, vector_index
from benchmarks.cluster.store_ops import Background, Snapshot, key_family, parse_monitor

ROOT = Path(__file__).resolve().parents[2]


def test_key_families_stop_at_the_hash_tag_or_the_first_id() -> None:
    assert key_family("gw:c:e:{3f2a}9b1c") == "gw:c:e"
    assert key_family("gw:rl:{k:abc}:k:abc:r") == "gw:rl"
    assert key_family("gw:vlog:{vlog3.12}") == "gw:vlog"
    assert key_family("gw:sf:" + "ab" * 32) == "gw:sf"
    assert key_family("gw:c:lru") == "gw:c:lru"
    assert key_family("gw:cache-gen") == "gw:cache-gen"


def test_monitor_lines_name_the_sender_command_and_key() -> None:
    assert parse_monitor(b'1733212345.123456 [0 127.0.0.1:50412] "SET" "gw:c:e:{p}x" "v" "PX" "10"') == (
        "client", "SET", "gw:c:e")
    assert parse_monitor(b'1733212345.123456 [0 lua] "HINCRBY" "gw:rl:{t}:team:r" "17" "1"') == (
        "lua", "HINCRBY", "gw:rl")
    # EVALSHA's key comes after the sha and the key count; a script without keys has none.
    assert parse_monitor(b'1.0 [0 127.0.0.1:1] "EVALSHA" "abc" "2" "gw:rl:{t}:k:a:r" "gw:bud:{t}:d" "60"') == (
        "client", "EVALSHA", "gw:rl")
    assert parse_monitor(b'1.0 [0 127.0.0.1:1] "EVALSHA" "abc" "0"') == ("client", "EVALSHA", "-")
    assert parse_monitor(b'1.0 [0 127.0.0.1:1] "XREAD" "COUNT" "5" "STREAMS" "gw:audit:{a1.2}" "0"') == (
        "client", "XREAD", "gw:audit")
    assert parse_monitor(b'1.0 [0 lua] "TIME"') == ("lua", "TIME", "-")
    assert parse_monitor(b"OK") is None


def _snap(calls: dict[str, int], reads: int, cpu: float, at: float) -> Snapshot:
    return Snapshot(collections.Counter(calls), reads, cpu, at)


def test_per_request_subtracts_the_background_and_sets_the_sync_apart() -> None:
    bg = Background.measure(_snap({"hgetall": 0, "replconf": 0}, 0, 0.0, 0.0),
                            _snap({"hgetall": 20, "replconf": 30}, 50, 0.1, 10.0))
    assert bg.calls == {"hgetall": 2.0} and bg.reads == 5.0  # replication acks are not the gateway's
    before = _snap({"get": 0, "hgetall": 0, "xrange": 0}, 0, 1.0, 100.0)
    # 100 requests over 2 s: 300 GETs in 150 reads, 4 background HGETALLs, 16 XRANGEs (2 syncs x 8 shards).
    after = _snap({"get": 300, "hgetall": 4, "xrange": 16, "info": 7}, 150 + 10 + 6, 1.0 + 0.2 + 0.02, 102.0)
    row = store_ops.per_request(before, after, 100, bg, took=2.0, workers=2, masters=3)
    assert row["by_command"] == {"get": 3.0}
    assert row["commands"] == 3.0
    assert row["round_trips"] == 1.5  # 166 reads - 10 background - 2 syncs x 3 masters
    assert row["redis_cpu_us"] == 2000.0  # 0.22 s minus 2 s of background at 10 ms/s, over 100 requests
    assert row["sync_commands_per_worker_s"] == 4.0


def test_monitor_counts_split_sent_from_script_and_timed_reads() -> None:
    before = collections.Counter[tuple[str, str, str]]()
    after = collections.Counter({("client", "EVALSHA", "gw:rl"): 10, ("lua", "HINCRBY", "gw:rl"): 40,
                                 ("client", "XADD", "gw:vlog"): 10, ("client", "XRANGE", "gw:vlog"): 80,
                                 ("client", "HGETALL", "gw:cache-gen"): 3})
    got = store_ops.monitor_per_request([before], [after], 10)
    assert (got["client_commands"], got["script_commands"]) == (2.0, 4.0)
    assert got["by_key"] == {"HINCRBY gw:rl (in script)": 4.0, "EVALSHA gw:rl": 1.0, "XADD gw:vlog": 1.0}
    assert got["timed_by_key"] == {"HGETALL gw:cache-gen": 0.3, "XRANGE gw:vlog": 8.0}


def _capacity() -> dict:
    names = {"GET": 10.0, "MGET": 11.0, "SET": 16.0, "DEL": 11.0, "ZADD": 11.0, "XADD": 14.0, "XRANGE": 13.0,
             "HGETALL": 13.0, "EVALSHA": 120.0}
    rows = [{"command": n, "name": n, "pipeline": 1, "server_cpu_us": us, "ops_per_s": 20_000}
            for n, us in names.items()]
    rows.append({"command": "GET P16", "name": "GET", "pipeline": 16, "server_cpu_us": 1.5, "ops_per_s": 190_000})
    # A sync that reads 60 new vectors costs 59 us more than one that reads one: 1 us per vector.
    rows.append({"command": "XRANGE COUNT 60 (sync)", "name": "XRANGE", "pipeline": 1, "server_cpu_us": 72.0,
                 "ops_per_s": 9_000})
    return {"redis_version": "7", "connections": 32, "requests": 10, "commands": rows,
            "rate_curve": [{"target_per_s": 200, "ops_per_s": 199, "server_cpu_us": 70.0}]}


def _store(admits: float) -> dict:
    def row(path: str, by_key: dict[str, float]) -> dict:
        sent = sum(v for k, v in by_key.items() if not k.endswith("(in script)"))
        return {"path": path, "by_key": by_key, "client_commands": sent, "script_commands": 20 * admits,
                "round_trips": 2.0}

    hit = {"MGET gw:c:i": 1.0, "ZADD gw:c:lru": 1.0, "XADD gw:audit": 1.0, "EVALSHA gw:rl": admits,
           "HINCRBY gw:rl (in script)": 4 * admits}
    miss = {**hit, "SET gw:c:e": 3.0, "DEL gw:sf": 1.0, "LPUSH gw:c:n": 1.0}  # LPUSH: not benchmarked
    paths = []
    for suffix in (", leases on", ", leases off"):
        paths += [row("governed hit" + suffix, hit), row("governed miss" + suffix, miss)]
    return {"paths": paths}


def test_a_path_costs_what_it_sent_at_unpipelined_prices() -> None:
    costs = cluster_main.cost_table(_capacity())
    assert costs["GET"] == 10.0  # the pipelined GET is not the price of a GET
    assert costs["XRANGE"] == 13.0 and cluster_main.entry_cost_us(_capacity()) == 1.0
    row = _store(1.0)["paths"][0]
    assert cluster_main.path_cost_us(row, costs) == 11 + 11 + 14 + 120  # the script's inner commands are free
    miss = _store(1.0)["paths"][1]
    assert cluster_main.path_cost_us(miss, costs) == 156 + 3 * 16 + 11 + 16  # LPUSH at the dearest single


def test_the_plan_sizes_masters_from_cpu_and_never_below_three() -> None:
    got = cluster_main.plan(_store(1.0), _capacity())
    fleet = {(f["scenario"], f["leases"]): f for f in got["fleet"]}
    small = fleet[("seed mixed 50% hits", True)]
    assert small["masters"] == 3 and small["workers"] == 128
    per_req = 0.5 * 156 + 0.5 * (156 + 48 + 11 + 16)
    timed = 128 * (4 * 8 * 13 + 13 + 1900 * 1.0)  # syncs, refreshes, and every miss's vector read by each worker
    assert small["redis_cores"] == round((3800 * per_req + timed) / 1e6, 2)
    big = fleet[("seed mixed 50% hits x10", True)]
    assert big["rps"] == 38_000 and big["masters"] == max(3, math.ceil(big["redis_cores"] / 0.5))
    assert big["utilisation_per_master"] <= 0.5
    assert fleet[("seed mixed 50% hits x10, 640 pods", True)]["workers"] == 1280
    # Every miss's vector goes to every worker.
    assert fleet[("seed all-miss", True)]["vlog_egress_mb_s"] == round(1900 * 128 * 1700 / 1e6)
    assert got["assumptions"]["one_team_max_rps_leases_off"] == round(0.5e6 / 120)


def test_the_report_renders_every_section(tmp_path: Path) -> None:
    store = _store(1.0)
    for r in store["paths"]:
        r.update(what="w", commands=5.0, redis_cpu_us=100.0, sync_commands_per_worker_s=30.0, non_200=0)
    store.update(masters=3, replicas=3, workers=2, requests_per_path=10, concurrency=4,
                 background={"leases on": {"commands_per_s": 2.0, "reads_per_s": 5.0}})
    capacity = _capacity()
    for r in capacity["commands"]:
        r.update(ops_per_core_s=round(1e6 / r["server_cpu_us"]), server_busy=0.3)
    vector = {"dim": 384, "dtype": "float32", "k": 4, "numpy": "2", "blas_threads": "1", "rows": [
        {"entries": 1000, "per_partition": 1000, "partitions": 1, "allocated_mb": 1.7, "allocated_mb_per_100k": 170,
         "rss_mb": 1.5, "knn_p50_ms": 0.05, "knn_p99_ms": 0.1}]}
    doc = {"date": "2026-12-03 08:00 UTC", "machine": {"host": "h", "cores": 2, "cpu": "c", "memory_gb": 1, "os": "o",
                                                       "python": "3", "loadavg_before": "1"},
           "store": store, "capacity": capacity, "vector": vector, "plan": cluster_main.plan(store, capacity)}
    md = cluster_main.markdown(doc)
    for heading in ("## Store operations per request, by path", "## One redis-server's capacity",
                    "## The plan's arithmetic", "## The per-worker vector index"):
        assert heading in md
    assert "| governed hit, leases off | w | 5.0 |" in md
    assert "| seed mixed 50% hits x10 | 38,000 | 64 | on |" in md
    assert "| 199 | 70.0 |" in md  # the low-rate CPU curve
    json.dumps(doc)  # what results.json holds


def test_the_vector_index_holds_what_it_was_given() -> None:
    rng = np.random.default_rng(1)
    parts = vector_index.fill(250, 100, rng)
    assert [len(p.members) for p in parts] == [100, 100, 50]
    held = vector_index.accounted_bytes(parts)
    assert held >= 250 * 384 * 4  # at least the vectors themselves
    assert held <= 3 * 128 * 384 * 4 + 250 * 400  # rows rounded up to a power of two, plus the member table
    p50, p99 = vector_index.knn_ms(parts, rng, runs=5)
    assert 0 < p50 <= p99


def test_the_prompts_never_run_out() -> None:
    texts = store_ops.sentences()
    got = [next(texts) for _ in range(10_000)]
    assert len(set(got)) == len(got)


def test_make_bench_cluster_is_wired() -> None:
    out = subprocess.run(["make", "-n", "-f", "Makefile.bench", "bench-cluster"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "-m benchmarks.cluster" in out and "nice -n 10" in out
    helped = subprocess.run([sys.executable, "-m", "benchmarks.cluster", "--help"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert "--parts" in helped and "--render" in helped
