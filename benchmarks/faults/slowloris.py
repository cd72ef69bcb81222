"""Slow clients against a running server: slowloris headers, idle connections, a trickled body.

    python -m benchmarks.faults.slowloris --port 8080 [--connections 200] [--seconds 12]

Opens N connections that send one header byte every 100 ms, one connection that sends nothing,
one that goes idle after a request, and one that sends its headers and then trickles a declared
body; meanwhile a normal client keeps asking /healthz. Prints, for each, whether and when the
server closed it, and the normal client's latency: the evidence for the server's header, idle and
body read timeouts (see docs/resilience.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000


async def _closed_within(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True if the server closed (or answered) within `within_s`."""
    try:
        await asyncio.wait_for(reader.read(1), within_s)
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def loris(host: str, port: int, limit: float) -> float | None:
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for byte in HEAD:
            writer.write(bytes([byte]))
            await writer.drain()
            if await _closed_within(reader, 0.1):
                return time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                return None
    except (ConnectionError, OSError):
        return time.monotonic() - t0
    finally:
        writer.close()
    return None


async def silent(host: str, port: int, limit: float, first: bytes = b"") -> float | None:
    """A connection that sends `first` (a whole request, or nothing), reads its answer, then idles."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if first:
            writer.write(first)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                          if line.startswith("content-length:"))
            await reader.readexactly(length)  # the whole answer: what is read next can only be a close
        t0 = time.monotonic()
        return round(time.monotonic() - t0, 2) if await _closed_within(reader, limit) else None
    finally:
        writer.close()


async def slow_body(host: str, port: int, limit: float) -> dict[str, Any]:
    """Headers at once, then 1 byte of a 100-byte body every 500 ms."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n")
    await writer.drain()
    try:
        while time.monotonic() - t0 < limit:
            writer.write(b" ")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(200), 0.5)
            except TimeoutError:
                continue
            return {"closed_after_s": round(time.monotonic() - t0, 2),
                    "answer": data.split(b"\r\n", 1)[0].decode(errors="replace")}
    except (ConnectionError, OSError) as exc:
        return {"closed_after_s": round(time.monotonic() - t0, 2), "answer": repr(exc)}
    finally:
        writer.close()
    return {"closed_after_s": None, "answer": None}


async def normal(host: str, port: int, seconds: float) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        out.append((time.monotonic() - t) * 1000.0)
        await asyncio.sleep(0.05)  # about 20 requests per second
    return out


async def run(host: str, port: int, connections: int, seconds: float) -> dict[str, Any]:
    lorises = [loris(host, port, seconds) for _ in range(connections)]
    results = await asyncio.gather(
        asyncio.gather(*lorises),
        silent(host, port, seconds),
        silent(host, port, seconds, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        slow_body(host, port, seconds),
        normal(host, port, min(seconds, 8.0)),
    )
    closed = [t for t in results[0] if t is not None]
    lat = sorted(results[4])
    return {
        "slowloris": {"connections": connections, "closed": len(closed),
                      "closed_after_s": [round(min(closed), 2), round(max(closed), 2)] if closed else None},
        "idle_without_a_byte_closed_after_s": results[1],
        "idle_keepalive_closed_after_s": results[2],
        "slow_body": results[3],
        "normal_client": {"requests": len(lat), "p50_ms": round(lat[len(lat) // 2], 2), "max_ms": round(lat[-1], 2)},
        "observed_for_s": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.host, args.port, args.connections, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
