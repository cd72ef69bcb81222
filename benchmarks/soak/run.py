"""The soak: hours of ordinary life in minutes. `make soak` (SOAK_S seconds, default 600).

    python -m benchmarks.soak.run [--seconds 600] [--rate 40] [--sample-s 5] [--workers 2]

Starts the fault suite's stack (tests/faults/conftest.py: redis-server, `gateway mock` upstreams,
`gateway serve` with two workers in the company configuration: auth, limits for every key, input
policies, the cache on Redis) and offers a steady open-loop mix for the whole run: unique chat
requests, repeated cacheable ones, streams, and the hostile suite's 152 kinds (20 MB bodies among
them). Every few seconds it samples the workers' RSS and open file descriptors and the p50/p99 of the
ordinary requests answered since the last sample, and prints a progress line.

It fails (exit 1) when, after the warm-up, RSS or descriptors grow past the bounds below, or when any
ordinary request fails, any hostile one gets a 5xx or no answer. It writes benchmarks/soak/results.md
and soak.png (RSS, descriptors and latency over time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
RSS_GROWTH = 0.05  # the bound: RSS after the warm-up grows less than 5%
# Descriptors follow the connections pooled (idle keep-alive ones stay after a latency spike, up to
# the client's 64): a pool stops growing, a leak does not.
FDS_GROWTH = 0.25
FDS_SLACK = 16
# Of every 20 requests: 12 unique chats, 2 repeated cacheable chats (cache hits), 3 streams, 3 hostile.
MIX = ("chat",) * 12 + ("cached",) * 2 + ("stream",) * 3 + ("hostile",) * 3


@dataclass
class Sample:
    t: float  # seconds since the start
    rss_mb: float
    fds: int
    answered: int  # ordinary requests answered since the previous sample
    p50_ms: float
    p99_ms: float
    failed: int  # ordinary requests not answered 200, since the previous sample
    hostile_bad: int  # hostile requests answered 5xx or not at all, since the previous sample


@dataclass
class Report:
    seconds: float
    rate: float
    warmup_s: float
    samples: list[Sample] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    hostile_statuses: Counter[int] = field(default_factory=Counter)

    def verdict(self) -> Verdict:
        return verdict(self.samples, self.warmup_s)


@dataclass
class Verdict:
    rss_base_mb: float
    rss_end_mb: float
    rss_max_mb: float
    fds_base: float
    fds_end: float
    fds_max: int
    rss_slope_mb_per_min: float
    failed: int
    hostile_bad: int
    problems: list[str]

    @property
    def rss_growth(self) -> float:
        return self.rss_end_mb / self.rss_base_mb - 1 if self.rss_base_mb else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def verdict(samples: list[Sample], warmup_s: float) -> Verdict:
    """After the warm-up: the median of the first and of the last fifth of the samples (at least 3
    each), so one sample taken mid-burst (a 20 MB body in flight) moves neither end."""
    after = [s for s in samples if s.t >= warmup_s]
    problems: list[str] = []
    if len(after) < 6:
        problems.append(f"only {len(after)} samples after the warm-up: run longer")
        after = samples or [Sample(0, 0, 0, 0, 0, 0, 0, 0)]
    n = max(3, len(after) // 5)
    first, last = after[:n], after[-n:]
    rss_base, rss_end = statistics.median(s.rss_mb for s in first), statistics.median(s.rss_mb for s in last)
    fds_base, fds_end = statistics.median(s.fds for s in first), statistics.median(s.fds for s in last)
    failed = sum(s.failed for s in samples)
    hostile_bad = sum(s.hostile_bad for s in samples)
    if rss_base and rss_end > rss_base * (1 + RSS_GROWTH):
        problems.append(f"RSS grew {rss_end / rss_base - 1:+.1%} after the warm-up (bound {RSS_GROWTH:.0%})")
    if fds_end > fds_base * (1 + FDS_GROWTH) + FDS_SLACK:
        problems.append(f"open descriptors grew {fds_base:.0f} -> {fds_end:.0f} "
                        f"(bound +{FDS_GROWTH:.0%} + {FDS_SLACK})")
    if failed:
        problems.append(f"{failed} ordinary requests failed")
    if hostile_bad:
        problems.append(f"{hostile_bad} hostile requests got a 5xx or no answer")
    return Verdict(rss_base, rss_end, max(s.rss_mb for s in after), fds_base, fds_end, max(s.fds for s in after),
                   _slope([(s.t, s.rss_mb) for s in after]) * 60.0, failed, hostile_bad, problems)


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second); 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


Send = Callable[[aiohttp.ClientSession], Coroutine[Any, Any, Any]]


async def soak(url: str, rss_kb: Callable[[], int], fds: Callable[[], int], seconds: float, rate: float = 40.0,
               sample_s: float = 5.0, warmup_s: float | None = None, progress: bool = True) -> Report:
    """Offer the mix at `rate` requests a second for `seconds` against the gateway at `url`; sample
    every `sample_s`. `rss_kb` and `fds` measure the gateway's workers."""
    from tests.faults.conftest import AUTH, chat
    from tests.faults.load import Outcome, pct, post, session
    from tests.faults.test_hostile import _kinds

    hostile = _kinds(url)
    warm = min(60.0, seconds / 5) if warmup_s is None else warmup_s
    report = Report(seconds, rate, warm)
    ordinary: list[Outcome] = []
    bad_hostile = 0
    chat_url = url + "/v1/chat/completions"

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        nonlocal bad_hostile
        kind = MIX[i % len(MIX)]
        if kind == "hostile":
            _, _, send = hostile[report.kinds[kind] % len(hostile)]  # every kind in turn, a cycle ~25 s
            report.kinds[kind] += 1
            o = await send(s)
            report.hostile_statuses[o.status] += 1
            if o.status == 0 or o.status >= 500:
                bad_hostile += 1
            return
        report.kinds[kind] += 1
        body = chat(i % 40, cacheable=True) if kind == "cached" else chat(i, stream=kind == "stream")
        o = await post(s, chat_url, body, AUTH, deadline_s=20)
        report.statuses[o.status] += 1
        ordinary.append(o)

    t0 = time.monotonic()
    done = asyncio.Event()

    async def sampler() -> None:
        nonlocal bad_hostile
        while True:
            try:
                await asyncio.wait_for(done.wait(), sample_s)
            except TimeoutError:
                pass
            batch, ordinary[:] = list(ordinary), []
            ms = [o.ms for o in batch if o.ok]
            s = Sample(round(time.monotonic() - t0, 1), rss_kb() / 1024, fds(), len(batch), pct(ms, 50), pct(ms, 99),
                       sum(1 for o in batch if not o.ok), bad_hostile)
            bad_hostile = 0
            report.samples.append(s)
            if progress:
                phase = "warm-up" if s.t < warm else "soak"
                print(f"[{s.t:6.0f}s / {seconds:.0f}s {phase:>7}] {s.answered / sample_s:5.1f} ok/s | "
                      f"p50 {s.p50_ms:6.1f} ms  p99 {s.p99_ms:7.1f} ms | RSS {s.rss_mb:6.1f} MB | fds {s.fds:4d} | "
                      f"failed {s.failed} | hostile 5xx/none {s.hostile_bad}", flush=True)
            if done.is_set():
                return

    async with session(limit=64) as s:
        watcher = asyncio.create_task(sampler())
        tasks: list[asyncio.Task[None]] = []
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the open loop's schedule
            tasks.append(asyncio.create_task(one(s, i)))
            if len(tasks) > 1000:
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
        done.set()
        await watcher
    return report


# ------------------------------------------------------------------------------------------- output

def write_results(report: Report, out: Path, started: str, load_before: tuple[float, ...],
                  load_after: tuple[float, ...], workers: int) -> None:
    v = report.verdict()
    out.mkdir(parents=True, exist_ok=True)
    after = [s for s in report.samples if s.t >= report.warmup_s]
    p50s = [s.p50_ms for s in after if s.answered]
    p99s = [s.p99_ms for s in after if s.answered]
    lines = [
        "# Soak",
        "",
        f"`make soak SOAK_S={report.seconds:.0f}` (`benchmarks/soak/run.py`), started {started}: the fault "
        "suite's stack "
        f"(redis-server, `gateway mock` with 20 ms latency, `gateway serve` with {workers} workers in the company "
        "configuration: auth, limits for every key, input policies, the cache on Redis), an open loop of "
        f"{report.rate:g} requests/s on the same machine ({platform.node()}, {os.cpu_count()} cores, load average "
        f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; the machine is shared). Of every 20 "
        "requests: 12 unique chats, 2 repeated cacheable chats, 3 streams, 3 hostile (the hostile suite's kinds in "
        "turn, 20 MB bodies among them). Samples every "
        f"{report.samples[1].t - report.samples[0].t if len(report.samples) > 1 else 0:.0f} s; warm-up "
        f"{report.warmup_s:.0f} s.",
        "",
        f"**{'PASS' if v.ok else 'FAIL'}**" + ("" if v.ok else ": " + "; ".join(v.problems)),
        "",
        "| measure | after the warm-up | bound |",
        "|---|---|---|",
        f"| worker RSS (median of the first / last fifth) | {v.rss_base_mb:.1f} -> {v.rss_end_mb:.1f} MB "
        f"({v.rss_growth:+.1%}), max {v.rss_max_mb:.1f} MB, trend {v.rss_slope_mb_per_min:+.2f} MB/min | "
        f"< {RSS_GROWTH:.0%} growth |",
        f"| open descriptors (workers) | {v.fds_base:.0f} -> {v.fds_end:.0f}, max {v.fds_max} | "
        f"<= +{FDS_GROWTH:.0%} + {FDS_SLACK} |",
        f"| ordinary requests failed | {v.failed} of {sum(report.statuses.values())} | 0 |",
        f"| hostile requests with a 5xx or no answer | {v.hostile_bad} of "
        f"{sum(report.hostile_statuses.values())} | 0 |",
        f"| p50 / p99 per sample (ordinary, ms) | p50 {min(p50s, default=0):.1f}-{max(p50s, default=0):.1f}, "
        f"p99 {min(p99s, default=0):.1f}-{max(p99s, default=0):.1f} | |",
        "",
        f"Requests: {dict(sorted(report.kinds.items()))}; ordinary statuses {dict(sorted(report.statuses.items()))}; "
        f"hostile statuses {dict(sorted(report.hostile_statuses.items()))}.",
        "",
        "![RSS, descriptors and latency over time](soak.png)",
        "",
        "| t (s) | RSS (MB) | fds | ok/s | p50 (ms) | p99 (ms) | failed | hostile 5xx/none |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(report.samples) // 40)  # at most ~40 rows; the plot has every sample
    for s in report.samples[::step]:
        lines.append(f"| {s.t:.0f} | {s.rss_mb:.1f} | {s.fds} | {s.answered / max(1e-9, _gap(report)):.1f} | "
                     f"{s.p50_ms:.1f} | {s.p99_ms:.1f} | {s.failed} | {s.hostile_bad} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "samples.json").write_text(json.dumps([s.__dict__ for s in report.samples], indent=0) + "\n")
    plot(report, out / "soak.png")


def _gap(report: Report) -> float:
    s = report.samples
    return s[1].t - s[0].t if len(s) > 1 else 1.0


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in report.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(t, [s.rss_mb for s in report.samples], color="tab:blue", label="worker RSS (MB)")
    top.set_ylabel("RSS (MB)")
    fds_ax = top.twinx()
    fds_ax.plot(t, [s.fds for s in report.samples], color="tab:gray", linewidth=0.8, label="open fds")
    fds_ax.set_ylabel("open fds")
    top.axvline(report.warmup_s, color="k", linestyle=":", linewidth=0.8)
    top.legend(loc="upper left")
    fds_ax.legend(loc="upper right")
    bottom.plot(t, [s.p50_ms for s in report.samples], label="p50")
    bottom.plot(t, [s.p99_ms for s in report.samples], label="p99")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.axvline(report.warmup_s, color="k", linestyle=":", linewidth=0.8)
    bottom.legend(loc="upper left")
    fig.suptitle(f"soak: {report.rate:g} req/s for {report.seconds:.0f} s (dotted: end of warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", "600")))
    p.add_argument("--rate", type=float, default=40.0, help="requests per second offered (default 40)")
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=None, help="default: a fifth of the run, at most 60 s")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)

    from tests.conftest import own_redis_server
    from tests.e2e.conftest import start_process
    from tests.faults.conftest import MOCK_LATENCY_MS, start_gateway
    from tests.faults.load import children, workers_rss_kb

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    redis_gen = own_redis_server("gw-soak-")
    redis = next(redis_gen)
    procs = []
    try:
        mock = start_process(["mock", "--latency-ms", str(MOCK_LATENCY_MS)], tmp / "mock.log")
        procs.append(mock)
        hole = start_process(["mock", "--latency-ms", str(MOCK_LATENCY_MS)], tmp / "hole.log")
        procs.append(hole)
        gw = start_gateway(tmp, mock, hole, redis.url, workers=args.workers)
        procs.append(gw)

        def fds() -> int:
            total = 0
            for pid in children(gw.proc.pid):
                try:
                    total += len(os.listdir(f"/proc/{pid}/fd"))
                except OSError:
                    continue
            return total

        print(f"soak: {args.rate:g} req/s for {args.seconds:.0f} s against {gw.url} ({args.workers} workers); "
              f"logs in {tmp}", flush=True)
        report = asyncio.run(soak(gw.url, lambda: workers_rss_kb(gw.proc.pid), fds, args.seconds, args.rate,
                                  args.sample_s, args.warmup_s))
    finally:
        for proc in reversed(procs):
            proc.stop()
        for _ in redis_gen:  # the generator's cleanup: stop the server, remove its directory
            pass
    write_results(report, args.out, started, load_before, os.getloadavg(), args.workers)
    v = report.verdict()
    print(f"soak: {'PASS' if v.ok else 'FAIL'}: RSS {v.rss_base_mb:.1f} -> {v.rss_end_mb:.1f} MB "
          f"({v.rss_growth:+.1%}), "
          f"fds {v.fds_base:.0f} -> {v.fds_end:.0f}, {v.failed} failed, {v.hostile_bad} hostile 5xx/none"
          + ("" if v.ok else ": " + "; ".join(v.problems)) + f"; wrote {args.out / 'results.md'}")
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
