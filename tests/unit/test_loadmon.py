"""The loop monitor reports a worker as busy while its event loop is blocked, and idle after."""

from __future__ import annotations

import asyncio
import time

from gateway.worker.loadmon import LoopMonitor


async def test_blocked_loop_reads_busy_then_recovers() -> None:
    mon = LoopMonitor(interval_s=0.01, busy_ms=3.0)
    mon.start()
    try:
        await asyncio.sleep(0.05)
        assert not mon.busy()
        for _ in range(3):
            time.sleep(0.05)  # noqa: ASYNC251 -- hog the loop as a CPU-bound worker would
            await asyncio.sleep(0)
            await asyncio.sleep(0.011)
        assert mon.busy() and mon.lag_ms > 3.0
        for _ in range(100):  # calm again: the average decays below the bar
            await asyncio.sleep(0.01)
            if not mon.busy():
                break
        assert not mon.busy()
    finally:
        await mon.stop()


async def test_every_sample_reaches_the_admission_and_a_blocked_loop_lowers_its_limit() -> None:
    from gateway.providers.shedding import Admission, AdmissionConfig

    adm = Admission(AdmissionConfig(max_in_flight=1000, min_concurrency=8, lag_target_ms=3.0))
    for _ in range(100):
        assert adm.enter() is True
    mon = LoopMonitor(interval_s=0.01)
    samples: list[tuple[float, float]] = []
    seen = asyncio.Event()
    first_cut: list[int] = []  # the limit after the first lowering (later samples may lower it more)

    def on_sample(now: float, lag_ms: float, cpu: float) -> None:
        samples.append((lag_ms, cpu))
        adm.tick(now, lag_ms, cpu)
        if adm.limit < 100 and not first_cut:
            first_cut.append(adm.limit)
            seen.set()

    mon.on_sample = on_sample
    mon.start()
    try:
        for _ in range(20):  # a loop busy with its own work: the samples after each stretch lag
            await asyncio.sleep(0.011)
            deadline = time.process_time() + 0.03
            while time.process_time() < deadline:
                pass
            if seen.is_set():
                break
        assert seen.is_set() and max(c for _, c in samples) >= 0.3  # its own CPU, not a neighbour's
        assert max(lag for lag, _ in samples) > 3.0 and first_cut == [90]  # 10% below the 100 worked on
        assert 8 <= adm.limit <= 90
    finally:
        await mon.stop()
