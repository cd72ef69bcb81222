"""Percentile, summary and overhead math shared by `gateway bench` and `make bench`."""

from __future__ import annotations

import pytest

from gateway.bench import stats


def test_nearest_rank_percentiles_are_observed_samples() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # no interpolation to 2.5
    assert stats.percentile([7.0], 99) == 7.0


def test_percentile_p99_of_small_sample_is_its_max() -> None:
    assert stats.percentile([1.0, 2.0, 3.0, 10.0], 99) == 10.0


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_rejects_out_of_range(p: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile([1.0], p)


def test_percentile_rejects_empty() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_summarize_sorts_and_rounds() -> None:
    s = stats.summarize([3.0, 1.0, 2.0, 4.0])
    assert s is not None
    assert (s.count, s.p50, s.p99, s.max, s.mean) == (4, 2.0, 4.0, 4.0, 2.5)
    assert stats.summarize([]) is None


def test_overhead_subtracts_baseline_percentile_by_percentile() -> None:
    gw = stats.summarize([61.0, 62.0, 63.0, 70.0])
    direct = stats.summarize([60.0, 60.5, 61.0, 64.0])
    over = stats.overhead(gw, direct)
    assert over is not None
    assert over.p50 == pytest.approx(1.5)
    assert over.p99 == pytest.approx(6.0)
    assert over.max == pytest.approx(6.0)
    assert stats.overhead(gw, None) is None
    assert stats.overhead(None, direct) is None


def test_overhead_may_be_negative_when_noise_wins() -> None:
    over = stats.overhead(stats.summarize([60.0]), stats.summarize([60.4]))
    assert over is not None and over.p50 == pytest.approx(-0.4)


def test_success_rate_and_ratio() -> None:
    assert stats.success_rate(99, 100) == 0.99
    assert stats.success_rate(0, 0) == 0.0
    assert stats.ratio(300.0, 100.0) == 3.0
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
