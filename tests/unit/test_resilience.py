"""Retry budget, full-jitter backoff, provider wait hints and the per-deployment breaker, on a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from gateway.providers.resilience import (
    Breaker,
    BreakerConfig,
    Breakers,
    RetryBudget,
    RetryBudgetConfig,
    backoff,
    counts_as_failure,
)
from gateway.providers.retry_after import parse_duration, retry_after_s


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- retry budget -------------------------------------------------------------------------------


def test_budget_allows_ratio_of_requests_plus_floor() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.1, min_retries=3, window_s=10), clock)
    for _ in range(100):
        budget.request()
    granted = sum(budget.try_retry() for _ in range(50))
    assert granted == 10 + 3
    assert budget.refused == 50 - 13


def test_budget_floor_lets_a_quiet_provider_retry() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.1, min_retries=2), Clock())
    budget.request()
    assert budget.try_retry() and budget.try_retry()
    assert not budget.try_retry()


def test_budget_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.1, min_retries=0, window_s=10), clock)
    for _ in range(50):
        budget.request()
    assert sum(budget.try_retry() for _ in range(20)) == 5
    clock.t += 5  # half a window: the requests and the retries are both still counted
    assert not budget.try_retry()
    clock.t += 5.5  # both left the window
    assert budget.allowed() == 0  # no requests in the window and no floor
    for _ in range(30):
        budget.request()
    assert sum(budget.try_retry() for _ in range(20)) == 3


def test_budget_after_a_long_silence_starts_clean() -> None:
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries=0, window_s=10), clock)
    for _ in range(10):
        budget.request()
    clock.t += 3600.0
    assert budget.allowed() == 0


def test_storm_stays_under_1_1_calls_per_request() -> None:
    """The issue's 500 storm: 50 req/s for 10 s, every attempt fails; upstream calls per request."""
    clock = Clock()
    budget = RetryBudget(RetryBudgetConfig(), clock)
    calls = requests = 0
    for tick in range(500):
        clock.t = 1000.0 + tick * 0.02
        budget.request()
        requests += 1
        calls += 1
        for _ in range(2):  # the old behaviour: up to two retries each
            if not budget.try_retry():
                break
            calls += 1
    assert calls / requests <= 1.11  # 10% plus the floor of 3 per window


# -- backoff -------------------------------------------------------------------------------------


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "expected_cap_ms"), [(0, 50), (1, 100), (2, 200), (5, 1600), (6, 2000), (100, 2000)]
)
def test_backoff_cap_doubles_up_to_max(attempt: int, expected_cap_ms: float) -> None:
    assert backoff(attempt, 50, 2000, FixedRng(0.999999)) == pytest.approx(expected_cap_ms / 1000, rel=1e-5)
    assert backoff(attempt, 50, 2000, FixedRng(0.0)) == 0.0


def test_backoff_is_full_jitter() -> None:
    rng = random.Random(7)
    waits = [backoff(3, 50, 2000, rng) for _ in range(2000)]
    assert all(0.0 <= w < 0.4 for w in waits)
    assert min(waits) < 0.02 and max(waits) > 0.38  # spread over the whole range, not a fixed step
    assert len({round(w, 6) for w in waits}) > 1900


# -- retry-after and rate-limit reset headers -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("2m59.56s", 179.56),
     ("0s", 0.0), ("", None), ("soon", None), ("5", None), ("1s2", None), ("s", None), ("-1s", None),
     (" 7s ", 7.0)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


NOW = datetime(2026, 12, 2, 13, 0, 0, tzinfo=UTC).timestamp()


def http_date(offset_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset_s, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after": "3"}, 3.0),
        (429, {"Retry-After": "2.5"}, 2.5),
        (503, {"retry-after": "10"}, 10.0),
        (529, {"retry-after": "1"}, 1.0),
        (429, {"retry-after": http_date(30)}, 30.0),
        (429, {"retry-after": http_date(-30)}, 0.0),  # a date in the past: go now
        (429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        (429, {"retry-after": "-5"}, None),
        (429, {"retry-after": "nan"}, None),
        (429, {"retry-after": "inf"}, None),
        (429, {"retry-after": "tomorrow"}, None),
        (429, {"retry-after": ""}, None),
        (429, {"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # the finer hint wins
        (429, {"retry-after-ms": "bad", "retry-after": "1"}, 1.0),
        (429, {"retry-after": "4", "x-ratelimit-reset-requests": "20s"}, 4.0),
        (429, {"x-ratelimit-reset-requests": "1s"}, 1.0),
        (429, {"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "1000"}, 0.02),
        (429, {"x-ratelimit-reset-requests": "2s", "x-ratelimit-remaining-requests": "5",
               "x-ratelimit-reset-tokens": "9s", "x-ratelimit-remaining-tokens": "0"}, 9.0),
        (429, {"x-ratelimit-reset-requests": "garbage"}, None),
        (429, {"anthropic-ratelimit-requests-reset": "2026-12-02T13:00:12Z",
               "anthropic-ratelimit-requests-remaining": "0"}, 12.0),
        (429, {"anthropic-ratelimit-tokens-reset": "not a date"}, None),
        (503, {"x-ratelimit-reset-requests": "1s"}, None),  # reset headers only explain a 429
        (500, {"retry-after": "3"}, None),
        (200, {"x-ratelimit-reset-requests": "1s"}, None),
        (429, {}, None),
    ],
)
def test_retry_after(status: int, headers: dict[str, str], expected: float | None) -> None:
    got = retry_after_s(status, headers, now=NOW)
    assert got == (pytest.approx(expected, abs=1e-6) if expected is not None else None)


@pytest.mark.parametrize(("status", "failure"), [(None, True), (500, True), (503, True), (429, True),
                                                 (200, False), (400, False), (404, False), (499, False)])
def test_counts_as_failure(status: int | None, failure: bool) -> None:
    assert counts_as_failure(status) is failure


# -- breaker --------------------------------------------------------------------------------------

CFG = BreakerConfig(consecutive_failures=5, failure_rate=0.5, min_requests=20, window_s=10,
                    base_ejection_s=5, max_ejection_s=60, probe_timeout_s=30)


def test_consecutive_failures_eject() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(4):
        b.failure()
        assert b.allow()
    b.failure()
    assert not b.allow()
    s = b.state()
    assert s.state == "open" and s.ejections == 1 and s.reopen_in_s == pytest.approx(5)
    assert b.retry_in_s() == pytest.approx(5)


def test_a_success_resets_the_consecutive_count() -> None:
    b = Breaker(CFG, Clock())
    for _ in range(20):
        for _ in range(4):
            b.failure()
        b.success()
    # 4 of 5 failed: the rate rule trips once the window holds 20 calls, though no 5 came in a row;
    # the later successes are answers to attempts sent before the ejection and don't close it
    assert b.state().state == "open" and b.state().ejections == 1


def test_late_successes_while_open_do_not_close() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    b.success()
    assert not b.allow() and b.state().state == "open"


def test_failure_rate_needs_enough_requests() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(9):  # 9 of 18 failed, alternating: under min_requests
        b.success()
        b.failure()
    assert b.state().state == "closed" and b.state().failure_rate == pytest.approx(0.5)
    b.success()
    b.failure()  # 10 of 20: the rate rule trips
    assert b.state().state == "open"


def test_failure_rate_below_threshold_stays_closed() -> None:
    b = Breaker(CFG, Clock())
    for _ in range(100):
        b.success()
        b.success()
        b.failure()
    assert b.state().state == "closed"


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(4):
        b.failure()
    clock.t += 11
    b.success()
    for _ in range(4):
        b.failure()
    assert b.state().state == "closed"
    assert b.state().failure_rate == pytest.approx(0.8)


def test_one_probe_after_the_cooldown_brings_it_back() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    clock.t += 4.9
    assert not b.allow()
    clock.t += 0.2
    assert b.state().state == "half_open"
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # only one at a time
    b.success()
    assert b.state().state == "closed"
    assert all(b.allow() for _ in range(10))


def test_a_failed_probe_ejects_for_longer_and_the_cooldown_is_capped() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    cooldowns = []
    for _ in range(15):
        cooldowns.append(b.state().reopen_in_s)
        clock.t += b.retry_in_s()
        assert b.allow()
        b.failure()
    assert cooldowns[:4] == [5, 10, 15, 20]
    assert max(cooldowns) == 60
    assert b.state().ejections == 16 and b.total_ejections == 16


def test_a_last_resort_probe_goes_before_the_cooldown_one_at_a_time() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    assert not b.allow()  # others may take the traffic: the cooldown holds
    assert b.allow(last_resort=True)  # nothing else can: a probe now
    assert not b.allow(last_resort=True)  # one at a time
    b.failure()
    assert b.state().ejections == 1 and b.state().reopen_in_s == 5  # an early probe does not lengthen it
    assert b.allow(last_resort=True)
    b.success()
    assert b.state().state == "closed" and b.allow()


def test_a_lost_probe_frees_its_slot() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    clock.t += 5
    assert b.allow()
    b.abandon()  # the client left before the probe answered
    assert b.allow()
    clock.t += 31  # a probe that never reported at all: the slot frees after probe_timeout_s
    assert b.allow()


def test_late_failures_of_attempts_sent_before_the_ejection_change_nothing() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    for _ in range(10):
        b.failure()
    assert b.state().ejections == 1 and b.state().reopen_in_s == pytest.approx(5)


def test_health_after_recovery_shrinks_the_multiplier() -> None:
    clock = Clock()
    b = Breaker(CFG, clock)
    for _ in range(5):
        b.failure()
    for _ in range(2):  # two failed probes: three ejections in a row
        clock.t += b.retry_in_s()
        assert b.allow()
        b.failure()
    clock.t += b.retry_in_s()
    assert b.allow()
    b.success()
    assert b.state().state == "closed" and b.state().ejections == 3
    clock.t += 25  # two full windows of health
    for _ in range(5):
        b.failure()
    assert b.state().ejections == 2  # 3 - 2 + 1
    assert b.state().reopen_in_s == pytest.approx(10)


def test_a_disabled_breaker_never_ejects() -> None:
    b = Breaker(BreakerConfig(enabled=False), Clock())
    for _ in range(100):
        b.failure()
    assert b.allow() and b.state().state == "closed"


def test_breakers_are_per_deployment() -> None:
    clock = Clock()
    reg = Breakers(CFG, clock)
    for _ in range(5):
        reg.get("a/gpt").failure()
    reg.get("b/gpt").success()
    assert not reg.get("a/gpt").allow() and reg.get("b/gpt").allow()
    states = reg.states()
    assert list(states) == ["a/gpt", "b/gpt"]
    assert states["a/gpt"].state == "open" and states["b/gpt"].state == "closed"


# -- configuration --------------------------------------------------------------------------------


def test_config_section_defaults_and_overrides() -> None:
    from gateway.config import load_config

    cfg = load_config(environ={})
    assert cfg.resilience.retry_budget.ratio == 0.10 and cfg.resilience.admission.max_in_flight == 1024
    cfg = load_config(environ={"GATEWAY_RESILIENCE__BREAKER__BASE_EJECTION_S": "2",
                               "GATEWAY_RESILIENCE__ADMISSION__MAX_IN_FLIGHT": "64"})
    assert cfg.resilience.breaker.base_ejection_s == 2.0 and cfg.resilience.admission.max_in_flight == 64
    adm = load_config(environ={"GATEWAY_RESILIENCE__ADMISSION__ADAPTIVE": "false",
                               "GATEWAY_RESILIENCE__ADMISSION__MAX_QUEUE_MS": "300"}).resilience.admission
    assert adm.adaptive is False and adm.max_queue_ms == 300 and adm.lag_target_ms == 10.0


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("RETRY_BUDGET__RATIO", "1.5", "retry_budget.ratio"),
    ("BREAKER__FAILURE_RATE", "0", "resilience.breaker"),
    ("BREAKER__MAX_EJECTION_S", "1", "max_ejection_s"),
    ("ADMISSION__MAX_IN_FLIGHT", "-1", "max_in_flight"),
    ("ADMISSION__MAX_PER_CLIENT", "-2", "max_per_client"),
    ("ADMISSION__MIN_CONCURRENCY", "0", "min_concurrency"),
    ("ADMISSION__MAX_QUEUE_MS", "-1", "max_queue_ms"),
    ("BREAKER__PROBES", "1", "probes"),
])
def test_config_section_rejects_bad_values(name: str, value: str, fragment: str) -> None:
    from gateway.config import ConfigError, load_config

    with pytest.raises(ConfigError) as exc:
        load_config(environ={f"GATEWAY_RESILIENCE__{name}": value})
    assert fragment in str(exc.value)
