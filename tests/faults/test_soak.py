"""The soak in the suite (full form only, `make faults`): GATEWAY_SOAK_S seconds (600) of the steady
mix of benchmarks/soak/run.py against the suite's stack; RSS and descriptors flat after the warm-up,
no ordinary request failed, no hostile one answered 5xx or not at all. `make soak` is the same load
on a stack of its own, and writes benchmarks/soak/results.md with a plot."""

from __future__ import annotations

import os

import pytest

from benchmarks.soak.run import soak

from .conftest import Stack, record


@pytest.mark.faults_full
async def test_a_steady_mix_for_ten_minutes_leaves_memory_and_descriptors_flat(stack: Stack) -> None:
    def fds() -> int:
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in stack.workers)

    seconds = float(os.environ.get("GATEWAY_SOAK_S", "600"))
    report = await soak(stack.gw.url, stack.rss_kb, fds, seconds, rate=40.0, progress=False)
    v = report.verdict()
    record("soak", seconds=seconds, requests=sum(report.kinds.values()), rss_base_mb=round(v.rss_base_mb),
           rss_end_mb=round(v.rss_end_mb), rss_change=f"{v.rss_growth:+.1%}",
           rss_trend_mb_per_min=round(v.rss_slope_mb_per_min, 2), fds=f"{v.fds_base:.0f}->{v.fds_end:.0f}",
           failed=v.failed, hostile_5xx_or_none=v.hostile_bad)
    others = [p for p in v.problems if not p.startswith("RSS grew")]
    assert others == [], v.problems
    if v.problems and os.environ.get("PYTHONMALLOC") != "malloc":  # open (docs/faults.md): shown, not hidden
        pytest.xfail(f"{v.problems[0]}: pymalloc's arenas keep a high-water mark after each round of the "
                     "20,000-message bodies (+5-7 MB per 25 s cycle here); PYTHONMALLOC=malloc hands it back")
    assert v.ok, v.problems
