"""Upstream transports compared: CPU per request of each HTTP client against the built-in mock.

    python -m benchmarks.transport_bench [--requests 4000] [--concurrency 64]

Starts `gateway mock` (no latency) on core 1, then for each client sends the same JSON POSTs with
the given concurrency from this process pinned to core 0, and reports this process's CPU time per
request (user + system): what one upstream call costs the gateway's worker in each client. The
candidates: aiohttp (the previous default), the lean asyncio + httptools transport (the default),
and pyreqwest (a Rust client) when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import msgspec

from benchmarks.harness import procs

BODY = msgspec.json.encode({"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 256, "messages": [
    {"role": "system", "content": "You are a helpful assistant for the operations team of Acme Corp."},
    {"role": "user", "content": "Please explain the quarterly budget report and the shipping delays " * 3}]})
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def run(send: Callable[[], Awaitable[int]], n: int, concurrency: int) -> float:
    for _ in range(50):
        await send()  # warm the pool
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await send()
            assert status == 200, status

    t = os.times()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    t2 = os.times()
    return (t2.user - t.user + t2.system - t.system) / n * 1000.0


async def aiohttp_client(url: str, n: int, c: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        async def send() -> int:
            async with s.post(url, data=BODY, headers=HEADERS) as r:
                await r.read()
                return r.status
        return await run(send, n, c)


async def lean_client(url: str, n: int, c: int) -> float:
    from gateway.providers.lean import LeanTransport

    t = LeanTransport("mock", 256, 5.0, 60.0)
    try:
        async def send() -> int:
            r = await t.post(url, BODY, HEADERS, 60.0)
            await r.read()
            r.release()
            return r.status
        return await run(send, n, c)
    finally:
        await t.close()


async def pyreqwest_client(url: str, n: int, c: int) -> float:
    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().max_connections(256).build()
    async with client:
        async def send() -> int:
            resp = await client.post(url).body_bytes(BODY).headers(HEADERS).build().send()
            await resp.bytes()
            return int(resp.status)
        return await run(send, n, c)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    port = procs.free_port()
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "gateway.cli", "mock", "--port", str(port),
           "--latency-ms", "0", "--workers", "1"]
    mock = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        procs.wait_for_port(port, 30, mock)
        os.sched_setaffinity(0, {0})
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        clients = {"aiohttp": aiohttp_client, "lean (httptools)": lean_client}
        try:
            import pyreqwest  # noqa: F401

            clients["pyreqwest"] = pyreqwest_client
        except ImportError:
            print("pyreqwest not installed: skipped")
        import uvloop

        for name, fn in clients.items():
            ms = uvloop.run(fn(url, args.requests, args.concurrency))
            print(f"{name:18s} {ms * 1000:7.1f} us CPU per request ({args.requests} requests, "
                  f"{args.concurrency} in flight)")
            time.sleep(0.5)
    finally:
        mock.terminate()
        mock.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
