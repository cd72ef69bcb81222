"""One benchmark run: start the mock, then each target in turn; run its levels; stop it; collect figures.

Placement on 2 cores: the target on core 0, the load driver and the mock on core 1, so every
figure is per gateway core; the 2-worker gateway run is unpinned and labelled so. The driver's
and the mock's CPU are recorded at every level to show neither was the bottleneck.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import secrets
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import driver, metrics, procs, profile, scenarios, targets, wrk
from benchmarks.harness.scenarios import FEATURES, OVERHEAD, OVERLOAD, THROUGHPUT, Level, Plan
from benchmarks.harness.variants import CONFIGURED, MASTER_KEY
from gateway.bench.progress import Progress

SATURATED_P50_MS = 1000.0
STARTUP_ESTIMATE_S = {"litellm": 15.0, "litellm-1.82.6": 15.0, "portkey": 3.0}
OVERLOAD_EXTRA_S = 5.0  # a past-capacity level that queues drains for up to the timeout: a guess between


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {
        "host": socket.gethostname(),
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


class Runner:
    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        log_dir: Path,
        progress: Progress,
        standin: bool = False,
        profile_levels: frozenset[str] = frozenset(),
    ) -> None:
        self.profile_levels = profile_levels  # "target:level-key" to sample with py-spy
        self.plan = plan
        self.workdir = workdir
        self.log_dir = log_dir
        self.progress = progress
        self.nonce = secrets.token_hex(4)
        two_cores = len(os.sched_getaffinity(0)) >= 2
        self.gateway_cores = "0" if two_cores else None
        self.rig_cores = "1" if two_cores else None
        self.standin = standin or targets.gateway_command() is None
        self.catalogue = targets.catalogue()
        self.done_s = 0.0
        self.mock_restarts = 0
        self.total_s = self._estimate()

    # ---- bookkeeping -----------------------------------------------------------------------------

    def _level_s(self) -> float:
        return self.plan.level_s + self.plan.warmup_s + 0.4

    def _estimate(self) -> float:
        total = 0.0
        for name in self.plan.targets:
            levels = self.plan.levels_for(name)
            total += len(levels) * self._level_s() + STARTUP_ESTIMATE_S.get(name, 2.0)
            total += OVERLOAD_EXTRA_S * sum(lv.scenario == OVERLOAD for lv in levels)
            total += self._wrk_s(name)
        return total

    def _wrk_for(self, name: str) -> bool:
        """The cross-check is of the throughput table: targets with throughput levels only."""
        return bool(self.plan.wrk_connections) and any(lv.scenario == THROUGHPUT for lv in self.plan.levels_for(name))

    def _wrk_s(self, name: str) -> float:
        return max(1, round(self.plan.level_s)) + 1.0 if self._wrk_for(name) else 0.0

    def _tick(self, message: str, extra: float = 0.0) -> None:
        done = self.done_s + extra
        self.progress.update(done / self.total_s if self.total_s else 1.0, message, eta_s=max(0.0, self.total_s - done))

    # ---- the run ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        _raise_nofile()
        driver.build()
        started = datetime.now(UTC)
        rig = targets.Rig(
            mock_port=procs.free_port(),
            workdir=self.workdir,
            gateway_cores=self.gateway_cores,
            rig_cores=self.rig_cores,
            standin=self.standin,
            log_dir=self.log_dir,
        )
        if self.standin:
            self.progress.log("bench: no `gateway` command found; measuring the STAND-IN mock and forwarder")
        self.rig = rig
        self.mock = self._start_mock()
        results: dict[str, Any] = {}
        try:
            for name in self.plan.targets:
                results[name] = self._run_target(self.catalogue[name], rig)
            mock_info = {"peak_rss_mb": round(self.mock.peak_rss / 2**20, 1), "restarts": self.mock_restarts}
        finally:
            self.mock.stop()
            self.progress.close()
        return {
            "schema": 1,
            "kind": "make bench",
            "plan": self.plan.name,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "standin": self.standin,
            "placement": {
                "target_cores": self.gateway_cores or "unpinned",
                "driver_and_mock_cores": self.rig_cores or "unpinned",
                "note": "every figure is per gateway core, except targets marked unpinned",
            },
            "settings": {
                "level_s": self.plan.level_s,
                "warmup_s": self.plan.warmup_s,
                "timeout_s": self.plan.timeout_s,
                "mock_latency_ms": self.plan.mock_latency_ms,
                "stream_chunks": self.plan.stream_chunks,
                "chunk_interval_ms": self.plan.chunk_interval_ms,
                "model": targets.MODEL,
                "open_loop_max_connections": self.plan.open_max_connections,
                "feature_rate": self.plan.feature_rate,
                "driver": "benchmarks/driver/loadgen.c (epoll, HTTP/1.1 keep-alive)",
                "overload_pct": self.plan.overload_pct,
                "wrk_connections": self.plan.wrk_connections,
                "cpu_per_request": "utime + stime of the target's process tree over the level (warm-up "
                "included) divided by the requests it answered in that time",
            },
            "versions": self._versions(),
            "logs": str(self.log_dir),
            "mock": mock_info,
            "targets": results,
        }

    def _start_mock(self) -> procs.Server:
        plan = self.plan
        mock = targets.start_mock(self.rig, plan.mock_latency_ms, plan.stream_chunks, plan.chunk_interval_ms)
        procs.wait_for_port(mock.port, 30, mock.proc)
        self._wait_ready(f"{self.rig.mock_base}/v1/chat/completions", {}, 30, mock)
        return mock

    def _ensure_mock(self) -> None:
        """Restart the mock on its port if it died (on a shared machine something may end it)."""
        if self.mock.alive():
            return
        self.progress.log(f"bench: the mock exited ({self.mock.proc.returncode}); restarting it")
        self.mock.stop()
        self.mock_restarts += 1
        self.mock = self._start_mock()

    def _versions(self) -> dict[str, str | None]:
        versions: dict[str, str | None] = {}
        for name in self.plan.targets:
            with contextlib.suppress(Exception):
                versions[name] = self.catalogue[name].version()
        return versions

    def _wait_ready(self, url: str, headers: dict[str, str], timeout: float, server: procs.Server | None) -> None:
        body = scenarios.passthrough_body().replace(b"{ID}", b"ready").replace(b"{WORDS}", b"readiness probe")
        deadline = time.monotonic() + timeout
        last = 0
        while time.monotonic() < deadline:
            if server is not None and not server.alive():
                raise RuntimeError(f"exited with code {server.proc.returncode}:\n{server.log_tail()}")
            last, _ = procs.http_ok(url, body, {"content-type": "application/json", **headers}, timeout=5)
            if last == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"no 200 from {url} within {timeout:.0f}s (last status {last})")

    def _run_target(self, target: targets.Target, rig: targets.Rig) -> dict[str, Any]:
        info: dict[str, Any] = {
            "label": target.label,
            "pinned": target.pinned and self.gateway_cores is not None,
            "workers": target.workers,
        }
        levels = self.plan.levels_for(target.name)
        why_not = target.missing()
        if why_not:
            self.progress.log(f"bench: {target.name}: {why_not}")
            self.done_s += len(levels) * self._level_s() + self._wrk_s(target.name)
            return {**info, "status": why_not, "levels": []}
        server: procs.Server | None = None
        self._ensure_mock()
        base = rig.mock_base
        self._tick(f"{target.name}: starting")
        try:
            if target.start is not None:
                server = target.start(rig)
                procs.wait_for_port(server.port, target.ready_timeout, server.proc)
                base = f"http://127.0.0.1:{server.port}"
            headers = {"authorization": f"Bearer {targets.API_KEY}", **target.headers(rig)}
            self._wait_ready(f"{base}/v1/chat/completions", headers, target.ready_timeout, server)
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            tail = server.log_tail() if server else ""
            if server is not None:
                server.stop()
            self.progress.log(f"bench: {target.name} did not start: {exc}\n{tail}")
            self.done_s += len(levels) * self._level_s() + self._wrk_s(target.name)
            return {**info, "status": f"failed to start: {exc}", "log_tail": tail, "levels": []}
        self.done_s += STARTUP_ESTIMATE_S.get(target.name, 2.0)
        if server is not None:
            server.start_sampling()
        results: list[dict[str, Any]] = []
        saturated: dict[str, str] = {}
        cross: dict[str, Any] | None = None
        try:
            for level in levels:
                results.append(self._run_level(target, level, base, headers, server, saturated, results))
            if self._wrk_for(target.name):
                cross = self._run_wrk(target, base, headers, server)
        finally:
            if server is not None:
                server.stop()
        out = {**info, "status": "ok", "levels": results}
        if cross is not None:
            out["wrk"] = cross
        if server is not None:
            out["peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
            out["peak_rss_process_mb"] = round(server.peak_rss_process / 2**20, 1)
            cpu = sum(r.get("resources", {}).get("cpu_s", 0.0) for r in results)
            done = sum(r.get("resources", {}).get("requests_total", 0) for r in results)
            out["cpu_s_per_1k"] = round(cpu / done * 1000, 4) if done else None
        return out

    def _run_wrk(
        self, target: targets.Target, base: str, headers: dict[str, str], server: procs.Server | None
    ) -> dict[str, Any]:
        """One wrk run at the cross-check's connections, with the target's CPU per request around it."""
        conns = self.plan.wrk_connections
        message = f"{target.name}: wrk @{conns}conn"
        self._tick(message)
        if server is not None and not server.alive():
            self.done_s += self._wrk_s(target.name)
            return {"connections": conns, "skipped": f"target exited ({server.proc.returncode})"}
        if server is not None:
            procs.wait_quiet(server)
        cpu0 = server.cpu_s() if server else 0.0
        try:
            record = wrk.run(
                f"{base}/v1/chat/completions",
                conns,
                self.plan.level_s,
                self.plan.timeout_s,
                scenarios.passthrough_body(),
                headers,
                self.nonce,
                self.rig_cores,
            )
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            self.done_s += self._wrk_s(target.name)
            self.progress.log(f"bench: {target.name}: wrk: {exc}")
            return {"connections": conns, "skipped": str(exc)}
        self.done_s += self._wrk_s(target.name)
        if server is not None and record["requests"]:
            cpu = server.cpu_s() - cpu0
            record["cpu_ms_per_request"] = round(cpu / record["requests"] * 1000, 4)
        lat = record["latency_ms"]
        self.progress.log(
            f"{target.name:>15} {'wrk@' + str(conns) + 'conn':<22}{record['rps']:>9.1f} rps  errors {record['errors']}"
            f"  p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms"
        )
        return record

    def _run_level(
        self,
        target: targets.Target,
        level: Level,
        base: str,
        headers: dict[str, str],
        server: procs.Server | None,
        saturated: dict[str, str],
        earlier: list[dict[str, Any]],
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "key": level.key,
            "scenario": level.scenario,
            "mode": level.mode,
            "value": level.value,
        }
        message = f"{target.name}: {level.key}"
        if server is not None and not server.alive():
            self.done_s += self._level_s()
            return {**record, "skipped": f"target exited ({server.proc.returncode})"}
        if level.scenario in saturated:
            self.done_s += self._level_s()
            return {**record, "skipped": saturated[level.scenario]}
        rate = float(level.value) if level.mode == "open" else 0.0
        if level.scenario == OVERLOAD:
            # Past capacity: a share above the best closed-loop RPS this target reached in this run.
            capacity = max((r["rps"] for r in earlier if r["scenario"] == THROUGHPUT and "rps" in r), default=0.0)
            if not capacity:
                self.done_s += self._level_s() + OVERLOAD_EXTRA_S
                return {**record, "skipped": "skipped: no throughput level to set its rate from"}
            rate = round(capacity * level.value / 100)
            record.update(capacity_rps=capacity, rate=rate)
        if server is not None:
            record["settle_s"] = round(procs.wait_quiet(server), 2)
        template, repeat, pct = scenarios.body_for(level, self.nonce)
        load = driver.Load(
            url=f"{base}/v1/chat/completions",
            mode=level.mode,
            duration=self.plan.level_s,
            warmup=self.plan.warmup_s,
            timeout=self.plan.timeout_s,
            body=template,
            repeat_body=repeat,
            repeat_pct=pct,
            headers=headers,
            rate=rate,
            connections=level.value if level.mode == "closed" else self.plan.open_max_connections,
        )
        scrape = server is not None and target.name.startswith("gateway") and level.scenario not in (FEATURES, OVERLOAD)
        before = metrics.scrape(base) if scrape else None
        count = level.scenario == FEATURES or (level.scenario == OVERHEAD and level.value == self.plan.feature_rate)
        counts0 = _feature_counts(target.name, base, server) if count else {}
        cpu0 = server.cpu_s() if server else 0.0
        self._ensure_mock()
        mock = self.mock
        mock_cpu0 = mock.cpu_s()
        companions = server.companions if server is not None else []
        companion_cpu0 = sum(c.cpu_s() for c in companions)
        if server is not None:
            server.level_peak_rss = 0
        spy, spy_out = None, self.log_dir / f"profile-{target.name}-{level.key}.txt"
        if server is not None and f"{target.name}:{level.key}" in self.profile_levels:
            spy = profile.start(server.pid, self.plan.warmup_s + self.plan.level_s, spy_out, self.rig_cores)
            if spy is None:
                self.progress.log("bench: py-spy is not installed (pip install py-spy); no profile")
        cores0, t0 = procs.core_times(), time.monotonic()
        outcome = driver.run(load, self.rig_cores, tick=lambda s: self._tick(message, min(s, self._level_s())))
        wall = time.monotonic() - t0
        self.done_s += self._level_s() + (OVERLOAD_EXTRA_S if level.scenario == OVERLOAD else 0.0)
        record.update(driver.summarize(outcome))
        if spy is not None:
            record["profile"] = profile.finish(spy, spy_out)
        # Requests the target answered during the level, warm-up included (the CPU covers both):
        # every completed request minus the measured ones that got no answer at all.
        unanswered = sum(int(outcome.summary["errors"][k]) for k in ("connect", "read", "timeout"))
        total_done = max(0, int(outcome.summary["done"]) - unanswered)
        res: dict[str, Any] = {
            "core_util": procs.core_util(cores0, procs.core_times()),
            "requests_total": total_done,
            "mock_cpu_util": round((mock.cpu_s() - mock_cpu0) / wall, 3),
        }
        if server is not None:
            cpu = server.cpu_s() - cpu0
            res.update(
                cpu_s=round(cpu, 3),
                cpu_util=round(cpu / wall, 3),
                cpu_s_per_1k=round(cpu / total_done * 1000, 4) if total_done else None,  # = CPU ms per request
                rss_peak_mb=round(server.level_peak_rss / 2**20, 1),
            )
        if companions:  # a compliance service on the rig's core: ours, not another process's noise
            res["companion_cpu_util"] = round((sum(c.cpu_s() for c in companions) - companion_cpu0) / wall, 3)
        # CPU used by processes that are not part of the benchmark (a busy shared machine): noise.
        busy = sum(res["core_util"].values())
        ours = res["mock_cpu_util"] + (record["driver"]["cpu_util"] or 0.0) + res.get("cpu_util", 0.0)
        ours += res.get("companion_cpu_util", 0.0)
        res["other_cpu"] = round(max(0.0, busy - ours), 3)
        record["resources"] = res
        if scrape:
            delta = metrics.deltas(before, metrics.scrape(base))
            if delta:
                record["metrics_delta"] = delta
                record.update(metrics.cache_figures(delta, wall, total_done))
        if count and server is not None:
            counts = _feature_counts(target.name, base, server)
            record["feature_counts"] = {k: v - counts0.get(k, 0) for k, v in counts.items() if v != counts0.get(k, 0)}
        if record["errors"] and server is not None and (line := server.last_error()):
            record["error_sample"] = line
        p50 = (record.get("latency_ms") or {}).get("p50", 0.0)
        if level.mode == "open" and (record["success_rate"] < 0.5 or p50 > SATURATED_P50_MS):
            # Far past its capacity: a higher rate would only queue longer (and cost minutes).
            saturated[level.scenario] = (
                f"skipped: saturated at {level.value} rps (success {record['success_rate']:.0%}, p50 {p50:,.0f} ms)"
            )
        self.progress.log(_one_line(target.name, record))
        return record


def _feature_counts(name: str, base: str, server: procs.Server | None) -> dict[str, int]:
    """A governed variant's policy counters (flags, blocks, timeouts, errors) and the checks its
    compliance service answered: the proof that the checks ran and that none refused or timed out."""
    variant = CONFIGURED.get(name)
    if server is None or variant is None or not variant.governed:
        return {}
    counts: dict[str, int] = {}
    admin = {"authorization": f"Bearer {MASTER_KEY}"}
    status, body = procs.http_ok(f"{base}/admin/governance", None, admin, timeout=3.0)
    with contextlib.suppress(ValueError, AttributeError):
        if status == 200:
            counts.update({f"policy {k}": int(v) for k, v in json.loads(body).get("policies", {}).items()})
    for companion in server.companions:
        status, body = procs.http_ok(f"http://127.0.0.1:{companion.port}/", None, {}, timeout=3.0)
        with contextlib.suppress(ValueError, AttributeError, KeyError):
            if status == 200:
                what = "OTLP exports" if variant.traced else "compliance checks"  # the sink counts its POSTs
                counts[what] = int(json.loads(body)["checks"])
    return counts


def _one_line(name: str, r: dict[str, Any]) -> str:
    lat = r.get("latency_ms") or {}
    parts = [f"{name:>15} {r['key']:<22}", f"{r['rps']:>8.1f} rps", f"ok {r['success_rate']:.1%}"]
    if lat:
        parts.append(f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms")
    if r.get("rate"):
        parts.append(f"at {r['rate']:,} rps")
    if r.get("shed"):
        parts.append(f"shed {r['shed']['count']} ({r['shed']['with_retry_after']} with retry-after)")
    if r["scenario"] == scenarios.STREAM and r.get("ttfb_ms"):
        parts.append(f"ttfb p50 {r['ttfb_ms']['p50']:.1f}")
    if r.get("hits"):
        parts.append(f"hits {r['hit_rate']:.0%}")
    res = r.get("resources", {})
    if "cpu_util" in res:
        parts.append(f"cpu {res['cpu_util']:.2f}")
    if res.get("cpu_s_per_1k") is not None:
        parts.append(f"{res['cpu_s_per_1k']:.3f} ms/req")
    parts.append(f"driver {r['driver']['cpu_util']:.2f} mock {res.get('mock_cpu_util', 0):.2f}")
    cores = res.get("core_util") or {}
    parts.append("busy " + " ".join(f"c{k}:{v:.2f}" for k, v in sorted(cores.items())))
    parts.append(f"other {res.get('other_cpu', 0.0):.2f}")
    return "  ".join(parts)


def python_version() -> str:
    return sys.version.split()[0]
