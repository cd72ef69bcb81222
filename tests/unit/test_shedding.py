"""The worker's admission: the in-flight bound, the concurrency limit on the loop's lag, the bounded wait
for a slot, and refusals in the caller's shape with retry-after (a fake clock drives the control loop)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway import errors
from gateway.providers.shedding import Admission, AdmissionConfig, client_host


def test_refuses_past_the_bound_and_admits_again_after_a_leave() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=3))
    assert [adm.try_enter() for _ in range(5)] == [True, True, True, False, False]
    assert adm.in_flight == 3 and adm.refused == 2
    adm.leave()
    assert adm.try_enter()
    assert not adm.try_enter()
    assert adm.peak == 3 and adm.refused == 3


def test_a_refusal_takes_no_slot() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=1))
    assert adm.try_enter()
    for _ in range(100):
        assert not adm.try_enter()
    adm.leave()
    assert adm.in_flight == 0 and adm.try_enter()


def test_zero_means_no_bound() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=0))
    assert all(adm.try_enter() for _ in range(10_000))
    assert adm.refused == 0 and adm.in_flight == 10_000


def test_default_bound() -> None:
    adm = Admission()
    assert adm.limit == 1024
    assert sum(adm.try_enter() for _ in range(1100)) == 1024


def test_unbalanced_leave_is_a_bug_not_a_negative_count() -> None:
    adm = Admission()
    with pytest.raises(RuntimeError):
        adm.leave()
    with pytest.raises(ValueError):
        Admission(AdmissionConfig(max_in_flight=-1))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_refusal_is_a_503_in_the_callers_shape_with_retry_after(protocol: errors.Protocol) -> None:
    adm = Admission(AdmissionConfig(max_in_flight=1, retry_after_s=2))
    err = adm.refusal()
    assert isinstance(err, errors.ServiceUnavailable)
    assert err.headers == {"retry-after": "2"}
    status, body = errors.render(err, protocol)
    data = json.loads(body)
    assert status == 503
    if protocol == "openai":
        assert data["error"]["code"] == "overloaded" and data["error"]["type"] == "service_unavailable"
    else:
        assert data == {"type": "error", "error": {"type": "overloaded_error", "message": err.message}}


def test_per_client_bound_refuses_one_client_not_the_others() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=100, max_per_client=2))
    assert [adm.try_enter("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert adm.try_enter("10.0.0.2") and adm.refused_client == 1 and adm.refused == 0
    adm.leave("10.0.0.1")
    assert adm.try_enter("10.0.0.1")
    for _ in range(2):
        adm.leave("10.0.0.1")
    adm.leave("10.0.0.2")
    assert adm.in_flight == 0 and adm.clients() == 0  # nothing kept for clients that left


def test_per_client_refusal_takes_no_worker_slot() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=2, max_per_client=1))
    assert adm.try_enter("a") and not adm.try_enter("a")
    assert adm.try_enter("b") and not adm.try_enter("c")  # now the worker is full
    assert adm.in_flight == 2 and adm.refused == 1 and adm.refused_client == 1


def test_many_clients_keep_the_table_small() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=0, max_per_client=1))
    for i in range(10_000):
        assert adm.try_enter(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        adm.leave(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert adm.clients() == 0


@pytest.mark.parametrize(("client", "host"), [
    ("10.0.0.7:51234", "10.0.0.7"), ("[::1]:51234", "::1"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("10.0.0.7", "10.0.0.7"), ("::1", "::1"), ("unix", "unix"),
])
def test_client_host(client: str, host: str) -> None:
    assert client_host(client) == host


# ---- the concurrency limit and the wait for a slot ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def adaptive(clock: Clock, **kw: int | float) -> Admission:
    cfg = {"max_in_flight": 1000, "min_concurrency": 4, "lag_target_ms": 10.0, "max_queue_ms": 0, **kw}
    return Admission(AdmissionConfig(**cfg), clock=clock)  # type: ignore[arg-type]


def lagging(adm: Admission, clock: Clock, lag_ms: float, samples: int = 1, cpu: float = 1.0) -> None:
    for _ in range(samples):
        clock.t += 0.02
        adm.tick(clock.t, lag_ms, cpu)


async def test_past_the_limit_requests_wait_and_get_slots_in_arrival_order() -> None:
    clock = Clock()
    adm = adaptive(clock)
    lagging(adm, clock, 50.0)  # nothing in service: the limit drops to its floor
    assert adm.limit == 4
    assert all(adm.enter() is True for _ in range(4))
    waiters = [adm.enter() for _ in range(3)]
    assert all(isinstance(w, asyncio.Future) for w in waiters)
    assert adm.in_service == 4 and adm.queued == 3 and adm.in_flight == 7
    assert adm.enter() is not True  # a newcomer never jumps the queue
    adm.leave()
    assert [w.done() for w in waiters] == [True, False, False]  # type: ignore[union-attr]
    assert await adm.wait(waiters[0]) is True  # type: ignore[arg-type]
    assert adm.in_service == 4 and adm.queued == 3


async def test_lag_above_target_shrinks_the_limit_and_below_it_waiting_requests_grow_it() -> None:
    clock = Clock()
    adm = adaptive(clock)
    assert adm.limit == 1000  # starts open: a normal load never waits for the limit to learn
    for _ in range(200):
        assert adm.enter() is True
    lagging(adm, clock, 30.0)
    assert adm.limit == 180  # from what is in service, not from the far higher ceiling
    lagging(adm, clock, 30.0, samples=100)
    assert adm.limit == 4  # the floor
    for _ in range(200):
        adm.leave()
    lagging(adm, clock, 2.0, samples=5)
    assert adm.limit == 4  # below target but nobody waiting: no reason to grow
    verdicts = [adm.enter() for _ in range(50)]
    assert sum(v is True for v in verdicts) == 4 and adm.queued == 46
    lagging(adm, clock, 2.0, samples=25)
    assert adm.limit >= 50 and adm.queued == 0  # grown, and the waiters got the new slots
    assert all(v is True or (isinstance(v, asyncio.Future) and v.result() is True) for v in verdicts)
    assert adm.in_service == 50 and adm.refused == 0


async def test_a_loop_that_lags_while_the_worker_hardly_runs_keeps_its_limit() -> None:
    """A neighbour's CPU, not the worker's own work: slow upstreams keep every slot they need."""
    clock = Clock()
    adm = adaptive(clock, max_in_flight=2000)
    for _ in range(1000):
        assert adm.enter() is True
    lagging(adm, clock, 40.0, samples=20, cpu=0.1)
    assert adm.limit == 2000
    lagging(adm, clock, 40.0, cpu=0.9)  # the worker's own work: now it shrinks
    assert adm.limit == 900
    waiting = [adm.enter() for _ in range(100)]
    lagging(adm, clock, 40.0, samples=3, cpu=0.1)  # requests wait, the lag is not ours: grow again
    assert adm.limit > 1000 and adm.queued == 0
    assert all(isinstance(w, asyncio.Future) and w.result() for w in waiting)


async def test_a_wait_longer_than_max_queue_is_refused_at_once() -> None:
    clock = Clock()
    adm = adaptive(clock, max_queue_ms=500, min_concurrency=10)
    lagging(adm, clock, 50.0)
    for _ in range(10):
        assert adm.enter() is True
    assert adm.enter() is not True  # one waiting from now on
    for _ in range(10):  # one request finishes every 100 ms, its slot goes to the waiter, another comes
        clock.t += 0.1
        adm.leave()
        assert isinstance(adm.enter(), asyncio.Future)
        adm.tick(clock.t, 50.0)
    assert adm.rate == pytest.approx(10.0) and adm.queued == 1
    # 10 per second: 5 waiters ahead make 500 ms, the 6th would wait longer.
    waits = [adm.enter() for _ in range(5)]
    assert [isinstance(w, asyncio.Future) for w in waits] == [True] * 4 + [False]
    assert adm.refused_queue == 1 and adm.in_flight == 15  # the refused one took nothing


async def test_the_drain_rate_is_measured_only_while_requests_wait() -> None:
    clock = Clock()
    adm = adaptive(clock, max_queue_ms=500, min_concurrency=10)
    lagging(adm, clock, 50.0)
    for _ in range(20):  # a light load: one at a time, 5 per second, nothing waits
        assert adm.enter() is True
        clock.t += 0.2
        adm.leave()
        adm.tick(clock.t, 50.0)
    assert adm.rate == 0.0  # unknown, not "5 per second": a burst now may use every slot it finds


async def test_a_waiter_past_max_queue_is_refused_and_its_place_given_back() -> None:
    clock = Clock()
    adm = adaptive(clock, max_queue_ms=500, min_concurrency=1)
    lagging(adm, clock, 50.0)
    assert adm.enter("a") is True
    late = adm.enter("a")
    clock.t += 0.3
    early = adm.enter("b")
    lagging(adm, clock, 50.0, samples=11)  # 0.52 s after the first waiter came, 0.22 s after the second
    assert isinstance(late, asyncio.Future) and late.result() is False
    assert isinstance(early, asyncio.Future) and not early.done()
    assert adm.expired == 1 and adm.in_flight == 2 and adm.queued == 1
    assert await adm.wait(late, "a") is False
    adm.leave("a")
    assert early.result() is True  # a slot passes to the waiter, not back to the pool


async def test_a_cancelled_waiter_gives_back_what_it_took() -> None:
    clock = Clock()
    adm = adaptive(clock, min_concurrency=1, max_per_client=5)
    lagging(adm, clock, 50.0)
    assert adm.enter("a") is True
    fut = adm.enter("b")
    assert isinstance(fut, asyncio.Future)
    task = asyncio.ensure_future(adm.wait(fut, "b"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adm.in_flight == 1 and adm.queued == 0 and adm.clients() == 1
    # Cancelled after the slot was handed over but before it ran: the slot comes back too.
    fut2 = adm.enter("c")
    assert isinstance(fut2, asyncio.Future)
    task2 = asyncio.ensure_future(adm.wait(fut2, "c"))
    await asyncio.sleep(0)
    adm.leave("a")
    task2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task2
    assert adm.in_flight == 0 and adm.in_service == 0 and adm.clients() == 0


async def test_a_closed_population_waits_its_turn_while_an_open_loop_excess_is_refused() -> None:
    """1,000 clients that each send again when answered never find the bound (1,024): they wait,
    none is refused. Arrivals that do not wait for answers pass the bound and are refused at once."""
    clock = Clock()
    adm = adaptive(clock, max_in_flight=1024, min_concurrency=100, max_queue_ms=2000)
    lagging(adm, clock, 50.0)
    pending: list[asyncio.Future[bool]] = []
    served = 0
    for _ in range(1000):
        v = adm.enter()
        if isinstance(v, asyncio.Future):
            pending.append(v)
    for _ in range(200):  # 200 samples of 20 ms: 4 s; 100 served per sample = 5,000 per second
        for _ in range(100):
            adm.leave()
            served += 1
            v = adm.enter()  # the answered client sends its next request
            assert v is not False
            if isinstance(v, asyncio.Future):
                pending.append(v)
        lagging(adm, clock, 50.0)
    assert served == 20_000 and adm.refused == adm.refused_queue == 0 and adm.in_flight == 1000
    # Open loop: 500 more arrivals on top of the 1,000, none of them waiting for an answer.
    verdicts = [adm.enter() for _ in range(500)]
    assert sum(v is False for v in verdicts) == 476 and adm.in_flight == 1024 and adm.refused == 476


def test_without_adaptive_nothing_waits_and_the_bound_is_max_in_flight() -> None:
    adm = Admission(AdmissionConfig(max_in_flight=3, adaptive=False))
    adm.tick(1.0, 500.0)
    adm.tick(1.02, 500.0)
    assert adm.limit == 3
    assert [adm.enter() for _ in range(4)] == [True, True, True, False]


def test_max_concurrency_caps_the_limit_and_equal_bounds_fix_it() -> None:
    clock = Clock()
    adm = adaptive(clock, max_concurrency=50, min_concurrency=50)
    assert adm.limit == 50
    for _ in range(50):
        assert adm.enter() is True
    lagging(adm, clock, 100.0, samples=10)
    assert adm.limit == 50


@pytest.mark.parametrize("bad", [{"min_concurrency": 0}, {"max_queue_ms": -1}, {"lag_target_ms": 0.0},
                                 {"max_concurrency": -1}])
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Admission(AdmissionConfig(**bad))  # type: ignore[arg-type]
