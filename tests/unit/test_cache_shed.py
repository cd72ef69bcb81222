"""The phase-4 shed watch: the share comes from the cache's counters, and it speaks only past its bound."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

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


def test_says_so_and_logs_once_when_shed() -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    _run(stats, 3000, 53)
    with capture_logs() as logs:
        reason = watch.check()
        assert reason is not None and "98%" in reason and "3000" in reason
        assert watch.check() == reason
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["event"] == "semantic_cache_shed"


def test_windows_roll_and_recovery_clears_it() -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    t0 = watch._base[0]  # the window's start, on the monotonic clock
    _run(stats, 200, 100)
    assert watch.check(now=t0 + 61) is not None  # closes the shedding window
    _run(stats, 10, 10)  # too few in the new window: the closed one still speaks
    assert watch.check(now=t0 + 70) is not None
    _run(stats, 190, 190)
    with capture_logs() as logs:
        assert watch.check(now=t0 + 80) is None
    assert any(e["event"] == "semantic_cache_not_shed" for e in logs)


def test_searches_the_verifier_could_not_judge_count_as_shed() -> None:
    stats = CacheStats()
    watch = ShedWatch(stats, max_share=0.05, window_s=60, min_lookups=50)
    _run(stats, 100, 100)  # every lookup embedded and searched...
    stats.phases[4].unjudged += 40  # ...but 40 had candidates the cross-encoder had no budget for
    r = watch.report()
    assert (r.lookups, r.shed) == (100, 40)
    assert watch.check() is not None
