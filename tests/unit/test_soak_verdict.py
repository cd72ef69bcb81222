"""The soak's verdict (benchmarks/soak/run.py): growth after the warm-up, failures, short runs."""

from __future__ import annotations

from benchmarks.soak.run import Sample, verdict


def _run(rss: list[float], fds: list[int] | None = None, failed_at: int | None = None) -> list[Sample]:
    return [Sample(t=5.0 * i, rss_mb=r, fds=(fds or [100] * len(rss))[i], answered=200, p50_ms=20, p99_ms=40,
                   failed=1 if i == failed_at else 0, hostile_bad=0) for i, r in enumerate(rss)]


def test_flat_memory_after_a_warm_up_that_grew_passes() -> None:
    v = verdict(_run([100, 130, 160] + [165.0] * 30), warmup_s=15)
    assert v.ok, v.problems
    assert v.rss_base_mb == 165 and abs(v.rss_growth) < 1e-9


def test_one_sample_taken_mid_burst_moves_neither_end() -> None:
    rss = [165.0] * 30
    rss[-1] = 240  # a 20 MB body in flight when the last sample was taken
    assert verdict(_run(rss), warmup_s=0).ok


def test_memory_that_keeps_growing_fails() -> None:
    v = verdict(_run([160 + i for i in range(30)]), warmup_s=0)  # +1 MB a sample: ~+15% end to end
    assert not v.ok and "RSS grew" in v.problems[0]
    assert v.rss_slope_mb_per_min > 11


def test_descriptors_that_keep_growing_fail_connections_that_come_and_go_do_not() -> None:
    assert not verdict(_run([165.0] * 30, fds=[100 + 2 * i for i in range(30)]), warmup_s=0).ok
    assert verdict(_run([165.0] * 30, fds=[100 + (i % 3) * 8 for i in range(30)]), warmup_s=0).ok


def test_a_single_failed_request_fails_the_soak() -> None:
    v = verdict(_run([165.0] * 30, failed_at=12), warmup_s=0)
    assert v.problems == ["1 ordinary requests failed"]


def test_a_run_too_short_to_judge_fails() -> None:
    assert not verdict(_run([165.0] * 4), warmup_s=0).ok
