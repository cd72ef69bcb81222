"""Thousands of hostile requests against the running gateway: never a 5xx, never a hang, every error
JSON in the caller's shape, and the workers' memory back where it was afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Proc
from tests.unit.test_hostile_input import HOSTILE

from .conftest import API_KEY, AUTH, Stack, chat, form, record, start_gateway
from .load import Outcome, pct, post, session, wait_until, workers_rss_kb

BIG = 20 * 1024 * 1024  # twice server.max_body_bytes
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


def _kinds(url: str) -> list[tuple[str, str, Callable[[aiohttp.ClientSession], Coroutine[Any, Any, Outcome]]]]:
    """(kind, caller protocol, send) for every hostile kind."""
    kinds: list[tuple[str, str, Callable[[aiohttp.ClientSession], Coroutine[Any, Any, Outcome]]]] = []

    def body(path: str, raw: bytes, headers: dict[str, str] | None = None) -> Callable[
            [aiohttp.ClientSession], Coroutine[Any, Any, Outcome]]:
        return lambda s: post(s, url + path, raw, {**AUTH, **(headers or {})}, deadline_s=20, keep_body=True)

    for kind, raw, _ in HOSTILE:  # every body shape no endpoint accepts, at the endpoints it names
        path = "/v1/completions" if kind.startswith("prompt") else "/v1/responses" if kind.startswith(
            ("input", "instructions")) else "/v1/chat/completions"
        kinds.append((f"openai: {kind}", "openai", body(path, raw)))
        if path == "/v1/chat/completions":
            kinds.append((f"anthropic: {kind}", "anthropic", body("/v1/messages", raw)))
    big_prompt = json.dumps(chat(1, messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])).encode()
    oversized = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"y" * BIG + b'"}]}'
    valid = json.dumps(chat(2)).encode()
    kinds += [
        ("openai: body over the limit (20 MB)", "openai", body("/v1/chat/completions", oversized)),
        ("anthropic: body over the limit (20 MB)", "anthropic", body("/v1/messages", oversized)),
        ("openai: 5 MB prompt (over max_prompt)", "openai", body("/v1/chat/completions", big_prompt)),
        ("anthropic: 5 MB prompt (over max_prompt)", "anthropic", body("/v1/messages", big_prompt)),
        ("openai: 20,000 messages", "openai", body("/v1/chat/completions", json.dumps(
            chat(3, messages=[{"role": "user", "content": "hi"}] * 20_000)).encode())),
        ("openai: no key", "openai", lambda s: post(s, url + "/v1/chat/completions", valid, deadline_s=20,
                                                    keep_body=True)),
        ("anthropic: wrong key", "anthropic", body("/v1/messages", valid, {"authorization": "Bearer sk-nope",
                                                                          "x-api-key": "sk-nope"})),
        ("openai: unknown model", "openai", body("/v1/chat/completions", json.dumps(
            chat(4, model="no-such-model")).encode())),
        ("anthropic: unknown model", "anthropic", body("/v1/messages", json.dumps(
            chat(5, model="no-such-model")).encode())),
        ("openai: unknown path", "openai", body("/v1/chat/complete", valid)),
        ("anthropic: count_tokens of garbage", "anthropic", body("/v1/messages/count_tokens", b"{not json")),
        ("openai: embeddings input a number", "openai",
         body("/v1/embeddings", b'{"model": "gpt-4o-mini", "input": 5}')),
        ("openai: lone surrogate", "openai", body("/v1/chat/completions",
                                                  b'{"model": "gpt-4o-mini", "messages": [{"role": "user", '
                                                  b'"content": "\\ud800"}]}')),
        ("openai: both content-length and chunked", "openai", lambda s: _raw(url, "/v1/chat/completions", valid)),
        ("anthropic: both content-length and chunked", "anthropic", lambda s: _raw(url, "/v1/messages", valid)),
    ]
    return kinds


async def _raw(url: str, path: str, body: bytes) -> Outcome:
    """A request with both Content-Length and Transfer-Encoding (request smuggling's framing)."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(chunked)}\r\n"
                     "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode() + chunked)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 20)
    except TimeoutError:
        return Outcome(t0, (time.monotonic() - t0) * 1000.0, 0, "hung")
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return Outcome(t0, (time.monotonic() - t0) * 1000.0, status, "" if status else "no answer", {}, rest)


def _shaped(protocol: str, body: bytes) -> bool:
    """The caller's own error shape: OpenAI {"error": {...}}, Anthropic {"type": "error", "error": {...}}."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return False
    if not isinstance(data["error"].get("message"), str):
        return False
    return data.get("type") == "error" and isinstance(data["error"].get("type"), str) if protocol == "anthropic" \
        else set(data) == {"error"}


async def _burst(url: str, rss_kb: Callable[[], int], label: str) -> tuple[int, int, float | None]:
    """The hostile burst against the gateway at `url`, its figures recorded and its answers checked;
    RSS before and after, and the seconds until it was back within 5% (None: not within 15 s)."""
    kinds = _kinds(url)
    total = int(form(2000, 6000))
    async with session(limit=64) as s:
        warm = await asyncio.gather(*(post(s, url + "/v1/chat/completions", chat(i), AUTH) for i in range(200)))
        assert all(o.ok for o in warm)
        before = rss_kb()
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> tuple[str, str, Outcome]:
            kind, protocol, send = kinds[i % len(kinds)]
            async with sem:
                return kind, protocol, await send(s)

        t0 = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(total)))
        took = time.monotonic() - t0
        peak = rss_kb()
        # Afterwards, normal traffic again: its own allocations are not the burst's.
        assert all(o.ok for o in await asyncio.gather(
            *(post(s, url + "/v1/chat/completions", chat(i), AUTH) for i in range(200))))

    async def within() -> bool:
        return rss_kb() <= before * 1.05

    settled_s = await wait_until(within, 15.0, every_s=0.25)
    after = rss_kb()
    statuses = Counter(o.status for _, _, o in results)
    server_errors = [(k, o.status, o.body[:200]) for k, _, o in results if o.status >= 500]
    hung = [k for k, _, o in results if o.status == 0]
    unshaped = sorted({k for k, p, o in results if o.status != 200 and not _shaped(p, o.body)})
    record(label, requests=total, kinds=len(kinds), seconds=round(took, 1),
           statuses=" ".join(f"{k}x{v}" for k, v in sorted(statuses.items())), x5xx=len(server_errors),
           hangs=len(hung), not_json_in_shape=len(unshaped), p99_ms=round(pct([o.ms for _, _, o in results], 99)),
           rss_before_mb=round(before / 1024), rss_peak_mb=round(peak / 1024), rss_after_mb=round(after / 1024),
           rss_change=f"{(after - before) / before:+.1%}", settled_after_s=settled_s)
    assert len(kinds) >= 30
    assert server_errors == [], server_errors[:5]
    assert hung == [], sorted(set(hung))
    assert unshaped == [], unshaped
    return before, after, settled_s


async def test_hostile_requests_never_5xx_never_hang_and_leave_no_memory_behind(stack: Stack) -> None:
    before, after, settled_s = await _burst(stack.gw.url, stack.rss_kb, "hostile input")
    if settled_s is None:  # an open finding (docs/faults.md): shown as xfailed, not hidden
        pytest.xfail(f"worker RSS {before} kB before, {after} kB after: pymalloc keeps the 1 MB arenas that the "
                     "small objects of 20,000-message bodies filled, pinned by a few long-lived blocks (measured: "
                     "100 arenas for 26.6 MB live, 27 before); PYTHONMALLOC=malloc returns them (next test)")


@pytest.fixture(scope="module")
def malloc_gateway(stack: Stack) -> Iterator[Proc]:
    """A second gateway like the suite's, its Python objects on glibc's malloc (PYTHONMALLOC=malloc)."""
    gw = start_gateway(stack.tmp, stack.mock, stack.hole, stack.redis.url, name="gateway-malloc",
                       environ={"PYTHONMALLOC": "malloc"})
    yield gw
    gw.stop()


async def test_on_glibc_malloc_the_workers_memory_comes_back_after_the_burst(malloc_gateway: Proc) -> None:
    # pymalloc's arenas out of the way, the trims after large requests (worker/memtrim.py) and
    # jemalloc's eager purge of body-sized buffers (gateway/server.py) bring RSS back.
    before, after, settled_s = await _burst(malloc_gateway.url, lambda: workers_rss_kb(malloc_gateway.proc.pid),
                                            "hostile (malloc)")
    assert settled_s is not None, f"worker RSS {before} kB before, {after} kB after"
