"""The load client behind `gateway bench`: aiohttp, closed loop (--concurrency) or open loop (--rps).

Open loop sends on a fixed schedule and measures each latency from the request's *scheduled* time,
so a server that falls behind shows its queueing instead of hiding it. The client reports its own
CPU use: near one full core, the client and not the server may be the limit (use `make bench`'s
C driver for more than a few hundred requests per second).
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from gateway.bench import stats


@dataclass
class Options:
    url: str
    model: str = "gpt-4o-mini"
    prompt: str = "Say hello in one short sentence."
    requests: int | None = None
    duration: float | None = None
    concurrency: int = 10
    rps: float | None = None
    stream: bool = False
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int = 32
    repeat: bool = False  # send the same prompt every time (cache hits) instead of unique ones
    timeout: float = 60.0


@dataclass
class Sample:
    latency_ms: float
    ttfb_ms: float | None
    status: int  # 0: transport error
    hit: bool
    error: str | None = None


@dataclass
class Tally:
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0

    @property
    def done(self) -> int:
        return len(self.samples)


def endpoint(url: str) -> str:
    """A base URL gets the chat completions path; a URL with a path is used as given."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path in ("", "/"):
        path = "/v1/chat/completions"
    elif path.endswith("/v1"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def request_body(opts: Options, path: str, text: str) -> dict[str, Any]:
    """The body for the endpoint's wire format (OpenAI chat/completions/embeddings, Anthropic messages)."""
    if path.endswith("/embeddings"):
        return {"model": opts.model, "input": text}
    body: dict[str, Any] = {"model": opts.model, "max_tokens": opts.max_tokens}
    if path.endswith("/chat/completions") or path.endswith("/messages"):
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    if opts.stream:
        body["stream"] = True
    if opts.temperature is not None:
        body["temperature"] = opts.temperature
    return body


def headers_for(opts: Options, path: str) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if path.endswith("/messages"):
        headers["anthropic-version"] = "2023-06-01"
        if opts.api_key:
            headers["x-api-key"] = opts.api_key
    elif opts.api_key:
        headers["authorization"] = f"Bearer {opts.api_key}"
    return headers


class Client:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.url = endpoint(opts.url)
        self.path = urlsplit(self.url).path
        self.headers = headers_for(opts, self.path)
        self.run_id = secrets.token_hex(4)
        self.tally = Tally()
        self._counter = itertools.count()

    def _body(self) -> bytes:
        n = next(self._counter)
        text = self.opts.prompt if self.opts.repeat else f"{self.opts.prompt} [{self.run_id}-{n}]"
        return msgspec.json.encode(request_body(self.opts, self.path, text))

    async def _one(self, session: aiohttp.ClientSession, scheduled: float) -> None:
        self.tally.sent += 1
        ttfb = None
        try:
            async with session.post(self.url, data=self._body(), headers=self.headers) as resp:
                hit = resp.headers.get("x-cache-hit", "").lower() in ("true", "1", "hit")
                async for _chunk in resp.content.iter_any():
                    if ttfb is None:
                        ttfb = (time.perf_counter() - scheduled) * 1000
                status = resp.status
            error = None if 200 <= status < 300 else f"http {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, hit, error = 0, False, type(exc).__name__
        latency = (time.perf_counter() - scheduled) * 1000
        self.tally.samples.append(Sample(latency, ttfb, status, hit, error))

    def _more(self, started: float) -> bool:
        if self.opts.requests is not None and self.tally.sent >= self.opts.requests:
            return False
        return not (self.opts.duration is not None and time.perf_counter() - started >= self.opts.duration)

    async def _closed(self, session: aiohttp.ClientSession, started: float) -> None:
        async def worker() -> None:
            while self._more(started):
                await self._one(session, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))

    async def _open(self, session: aiohttp.ClientSession, started: float) -> None:
        assert self.opts.rps
        interval, tasks, n = 1.0 / self.opts.rps, set(), 0
        while self._more(started) and (self.opts.requests is None or n < self.opts.requests):
            scheduled = started + n * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(session, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self, on_tick: Callable[[Tally, float], None] | None = None) -> dict[str, Any]:
        limit = 0 if self.opts.rps else self.opts.concurrency
        timeout = aiohttp.ClientTimeout(total=self.opts.timeout)
        cpu0, started_wall = _cpu(), time.time()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit), timeout=timeout, auto_decompress=False
        ) as session:
            started = time.perf_counter()
            load = self._open(session, started) if self.opts.rps else self._closed(session, started)
            job = asyncio.create_task(load)
            while not job.done():
                if on_tick is not None:
                    on_tick(self.tally, time.perf_counter() - started)
                await asyncio.wait({job}, timeout=0.2)
            job.result()
            wall = time.perf_counter() - started
        return summarize(self.opts, self.url, self.tally, wall, (_cpu() - cpu0) / wall, started_wall)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize(opts: Options, url: str, tally: Tally, wall: float, cpu_util: float, started: float) -> dict[str, Any]:
    ok = [s for s in tally.samples if 200 <= s.status < 300]
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for s in tally.samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    hits = sum(1 for s in ok if s.hit)
    latency = stats.summarize(s.latency_ms for s in ok)
    ttfb = stats.summarize(s.ttfb_ms for s in ok if s.ttfb_ms is not None) if opts.stream else None
    load = {"mode": "open", "rps": opts.rps} if opts.rps else {"mode": "closed", "concurrency": opts.concurrency}
    return {
        "schema": 1,
        "kind": "gateway bench",
        "started_unix": round(started, 3),
        "url": url,
        "model": opts.model,
        "stream": opts.stream,
        "repeat": opts.repeat,
        "load": load,
        "duration_s": round(wall, 3),
        "requests": tally.done,
        "ok": len(ok),
        "errors": tally.done - len(ok),
        "error_kinds": errors,
        "status_counts": statuses,
        "success_rate": stats.success_rate(len(ok), tally.done),
        "rps": round(len(ok) / wall, 2) if wall > 0 else 0.0,
        "latency_ms": None if latency is None else msgspec.structs.asdict(latency),
        "ttfb_ms": None if ttfb is None else msgspec.structs.asdict(ttfb),
        "hits": hits,
        "hit_rate": stats.success_rate(hits, len(ok)),
        "client_cpu_util": round(cpu_util, 3),
    }
