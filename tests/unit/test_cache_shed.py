"""The phase-4 shed watch: the share comes from the cache's counters, and it speaks only past its bound."""

from __future__ import annotations

import logging

import pytest

from gateway.cache.shed import ShedWatch
from gateway.cache.types import CacheStats


def _run(stats: CacheStats, lookups: int, searched: int) -> None:
    stats.phases[4].lookups += lookups
    stats.semantic_searches += searched


def test_quiet_while_phase4_runs_and_below_min_lookups() -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    _run(stats, 100, 97)  # 3% shed
    r = watch.report()
    assert (r.lookups, r.shed) == (100, 3) and r.share == pytest.approx(0.03)
    assert watch.check() is None
    stats2 = CacheStats()
    few = ShedWatch(stats2, min_lookups=50)
    _run(stats2, 10, 0)  # all shed, but too few lookups to say anything
    assert few.check() is None


def test_says_so_and_logs_once_when_shed(caplog: pytest.LogCaptureFixture) -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    _run(stats, 3000, 53)
    with caplog.at_level(logging.INFO, logger="gateway.cache.shed"):
        reason = watch.check()
        assert reason is not None and "98%" in reason and "3000" in reason
        assert watch.check() == reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "shed" in warnings[0].getMessage()


def test_windows_roll_and_recovery_clears_it(caplog: pytest.LogCaptureFixture) -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    t0 = watch._base[0]  # the window's start, on the monotonic clock
    _run(stats, 200, 100)
    assert watch.check(now=t0 + 61) is not None  # closes the shedding window
    _run(stats, 10, 10)  # too few in the new window: the closed one still speaks
    assert watch.check(now=t0 + 70) is not None
    _run(stats, 190, 190)
    with caplog.at_level(logging.INFO, logger="gateway.cache.shed"):
        assert watch.check(now=t0 + 80) is None
    assert any("no longer shed" in r.getMessage() for r in caplog.records)
