"""The load driver: builds benchmarks/driver/loadgen.c with gcc, runs one load level, reads its output."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.harness.procs import pinned
from gateway.bench import stats

HERE = Path(__file__).resolve().parent.parent
SOURCE = HERE / "driver" / "loadgen.c"
BUILD = HERE / ".build" / "loadgen"


def build() -> Path:
    """Compile the driver when the binary is missing or older than its source."""
    if BUILD.exists() and BUILD.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BUILD
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler found: apt-get install -y gcc")
    BUILD.parent.mkdir(parents=True, exist_ok=True)
    tmp = BUILD.with_name(f"{BUILD.name}.{os.getpid()}.tmp")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
    os.replace(tmp, BUILD)  # atomically: a concurrent run never sees half a binary
    return BUILD


@dataclass
class Load:
    """One load level: where, how (open loop at `rate`, or closed with `connections`), what."""

    url: str
    mode: str  # "open" | "closed"
    connections: int
    duration: float
    warmup: float
    body: bytes
    rate: float = 0.0
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    repeat_body: bytes | None = None
    repeat_pct: int = 0


SHED_STATUSES = ("429", "503")  # what a target past its capacity should answer, with Retry-After


@dataclass
class Outcome:
    """What the driver saw: its summary plus the per-request samples, latencies in ms."""

    summary: dict[str, Any]
    latency: list[float]  # successful requests only
    ttfb: list[float]
    hit_latency: list[float]
    miss_latency: list[float]
    status_counts: dict[str, int]
    shed_latency: list[float] = field(default_factory=list)  # 429 and 503 answers
    retry_after: dict[str, int] = field(default_factory=dict)  # answers with a Retry-After header, by status

    @property
    def ok(self) -> int:
        return int(self.summary["ok"])

    @property
    def measured(self) -> int:
        return int(self.summary["measured"])

    @property
    def errors(self) -> int:
        return self.measured - self.ok


def _parse_raw(path: Path) -> Outcome:
    """The driver's per-request lines ("latency_us ttfb_us status hit [retry_after]") as samples."""
    out = Outcome({}, [], [], [], [], {})
    with path.open() as fh:
        for line in fh:
            lat_us, ttfb_us, status, hit, *rest = line.split()
            out.status_counts[status] = out.status_counts.get(status, 0) + 1
            if rest and rest[0] == "1":
                out.retry_after[status] = out.retry_after.get(status, 0) + 1
            code = int(status)
            ms = int(lat_us) / 1000
            if status in SHED_STATUSES:
                out.shed_latency.append(ms)
            if not 200 <= code < 300:
                continue
            out.latency.append(ms)
            if int(ttfb_us) >= 0:
                out.ttfb.append(int(ttfb_us) / 1000)
            (out.hit_latency if hit == "1" else out.miss_latency).append(ms)
    return out


def run(load: Load, cores: str | None, tick: Callable[[float], None] | None = None) -> Outcome:
    """Run one level; `tick(seconds_elapsed)` is called about twice a second while it runs."""
    binary = build()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        (work / "body.json").write_bytes(load.body)
        cmd = [
            str(binary),
            "--url",
            load.url,
            "--mode",
            load.mode,
            "--connections",
            str(load.connections),
            "--duration",
            str(load.duration),
            "--warmup",
            str(load.warmup),
            "--timeout",
            str(load.timeout),
            "--body",
            str(work / "body.json"),
            "--out",
            str(work / "raw.txt"),
        ]
        if load.mode == "open":
            cmd += ["--rate", str(load.rate)]
        for name, value in load.headers.items():
            cmd += ["--header", f"{name}: {value}"]
        if load.repeat_body is not None and load.repeat_pct > 0:
            (work / "repeat.json").write_bytes(load.repeat_body)
            cmd += ["--repeat-body", str(work / "repeat.json"), "--repeat-pct", str(load.repeat_pct)]
        started = time.monotonic()
        proc = subprocess.Popen(pinned(cmd, cores), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while proc.poll() is None:
            if tick is not None:
                tick(time.monotonic() - started)
            time.sleep(0.5)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"load driver failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
        outcome = _parse_raw(work / "raw.txt")
        outcome.summary = msgspec.json.decode(out.strip().splitlines()[-1])
    return outcome


def summarize(outcome: Outcome) -> dict[str, Any]:
    """The level's figures as plain JSON-ready data."""
    s = outcome.summary
    wall = float(s["duration_s"])
    hits = len(outcome.hit_latency)
    data: dict[str, Any] = {
        "requests": outcome.measured,
        "ok": outcome.ok,
        "errors": outcome.errors,
        "error_kinds": {k: v for k, v in s["errors"].items() if v},
        "status_counts": outcome.status_counts,
        "success_rate": stats.success_rate(outcome.ok, outcome.measured),
        "rps": round(outcome.ok / wall, 1) if wall else 0.0,
        "latency_ms": _struct(stats.summarize(outcome.latency)),
        "ttfb_ms": _struct(stats.summarize(outcome.ttfb)),
        "unfinished": int(s.get("unfinished", 0)),  # closed loop: connections with no answer all level
        "hits": hits,
        "hit_rate": stats.success_rate(hits, outcome.ok),
        "driver": {
            "cpu_s": s["driver_cpu_s"],
            "cpu_util": round(s["driver_cpu_s"] / s["wall_s"], 3) if s["wall_s"] else None,
            "max_schedule_lag_ms": s["max_schedule_lag_ms"],
            "sends_late_over_1ms": s["sends_late_over_1ms"],
            "conns_opened": s["conns_opened"],
            "pending_max": s["pending_max"],
            "retries": s["retries"],
        },
    }
    if outcome.shed_latency:
        # Past capacity: how many were shed, how fast, and whether they said when to come back.
        data["shed"] = {
            "count": len(outcome.shed_latency),
            "with_retry_after": sum(outcome.retry_after.get(s, 0) for s in SHED_STATUSES),
            "latency_ms": _struct(stats.summarize(outcome.shed_latency)),
        }
        data["answered_latency_ms"] = _struct(stats.summarize(outcome.latency + outcome.shed_latency))
    if hits:
        data["hit_latency_ms"] = _struct(stats.summarize(outcome.hit_latency))
        data["miss_latency_ms"] = _struct(stats.summarize(outcome.miss_latency))
    return data


def _struct(value: msgspec.Struct | None) -> dict[str, Any] | None:
    return None if value is None else msgspec.structs.asdict(value)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
