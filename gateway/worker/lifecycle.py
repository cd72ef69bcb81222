"""A worker's shutdown always ends, and a worker never outlives its master.

Two ways a worker was seen to keep running after its gateway was stopped:
- a background loop whose cancellation was swallowed inside a library call (the ledger's flusher
  went back to sleeping after one, in a CI run) held `__rsgi_del__` on `await task` for ever; when
  the master was then killed, the worker stayed, still serving its shared socket;
- a master killed with SIGKILL (the OOM killer, `kill -9`, a supervisor's last resort) cannot stop
  its workers: they went on serving with no master to respawn them or stop them.

So every background task is stopped with a bounded wait (`stop_task`), every closer runs within a
bound (`bounded`), and each worker checks its parent once a second (`ParentWatch`): when the master
is gone it stops itself the way the master would have (SIGTERM, the graceful path), and exits hard
if that does not finish within the drain timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("gateway.worker")


async def stop_task(task: asyncio.Future[Any] | None, timeout_s: float = 2.0) -> None:
    """Cancel a background task and wait for it, at most `timeout_s`; its result or error is
    retrieved (never reported at garbage collection). A task that ignores its cancellation is left
    behind with one log line instead of holding the caller."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("task_did_not_stop", task=repr(task)[:200], waited_s=timeout_s)
            return
    if not task.cancelled():
        task.exception()


async def bounded(closer: Callable[[], Awaitable[Any] | Any], timeout_s: float) -> None:
    """Run one closer (sync or async) within `timeout_s`; its failure or overrun is logged, not raised,
    so the closers after it (the store's last) still run."""
    try:
        result = closer()
        if not asyncio.iscoroutine(result) and not isinstance(result, asyncio.Future):
            return
        task = asyncio.ensure_future(result)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("close_timed_out", closer=repr(closer)[:200], waited_s=timeout_s)
            task.cancel()
            return
        task.result()
    except Exception:
        log.exception("close_failed", closer=repr(closer)[:200])


class ParentWatch:
    """Once a second: is the process that started this worker still its parent?"""

    def __init__(self, grace_s: float, interval_s: float = 1.0,
                 stop: Callable[[], None] | None = None) -> None:
        self.parent = os.getppid()
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.orphaned = False
        self._stop = stop or _terminate_self
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(self.interval_s, self._check, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        if os.getppid() == self.parent:
            self._handle = loop.call_later(self.interval_s, self._check, loop)
            return
        self.orphaned = True
        self._handle = None
        log.warning("master process gone: stopping this worker", master_pid=self.parent, grace_s=self.grace_s)
        # The graceful stop drains within the drain timeout; past it nothing else would end this process.
        timer = threading.Timer(self.grace_s, os._exit, (1,))
        timer.daemon = True
        timer.start()
        self._stop()


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # Granian's worker stops on it as when its master sends it
