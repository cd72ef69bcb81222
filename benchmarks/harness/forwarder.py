"""The featureless forwarder: the cheapest Python proxy on this machine today, `make bench`'s calibration point.

Granian (RSGI, 1 worker, uvloop) + msgspec + one pooled aiohttp session: it reads the body, decodes
the two fields any router must read (model, stream), forwards the same bytes with the caller's
Authorization, and returns the upstream's bytes (streams piece by piece). No auth, limits,
policies, cache, ledger or logs. The gateway's CPU per request is quoted as a ratio to this one's,
measured in the same run, because absolute CPU times move with the machine.

    granian --interface rsgi --loop uvloop --workers 1 benchmarks.harness.forwarder:app  (env FORWARD_TO)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import msgspec


class _Route(msgspec.Struct):
    model: str = ""
    stream: bool = False


class Forwarder:
    """Forward every request to FORWARD_TO over one pooled aiohttp session per worker."""

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = (upstream or os.environ.get("FORWARD_TO", "http://127.0.0.1:9000")).rstrip("/")
        self.decoder = msgspec.json.Decoder(_Route)
        self.session: aiohttp.ClientSession | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        async def build() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

        self.session = loop.run_until_complete(build())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.session is not None:
            loop.run_until_complete(self.session.close())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        assert self.session is not None
        body = await proto()
        if body:
            try:
                self.decoder.decode(body)  # what a router reads; the bytes go on unchanged
            except msgspec.DecodeError:
                proto.response_bytes(400, [("content-type", "application/json")], b'{"error":{"message":"bad json"}}')
                return
        headers = {"content-type": "application/json"}
        if auth := scope.headers.get("authorization"):
            headers["authorization"] = auth
        async with self.session.request(scope.method, self.upstream + scope.path, data=body, headers=headers) as resp:
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                transport = proto.response_stream(resp.status, [("content-type", ctype)])
                async for piece in resp.content.iter_any():
                    await transport.send_bytes(piece)
                return
            proto.response_bytes(resp.status, [("content-type", ctype)], await resp.read())


app = Forwarder()
