"""An in-memory `Transport` (in the style of httpx's MockTransport): the network replaced by a function.

    async def handler(request: MockRequest) -> MockResponse: ...
    providers = open_providers(cfg.providers, port, transports={"openai": MockTransport(handler)})

A handler may raise a GatewayError (as the real transport does for a refused connection), return a
plain body, or a list of chunks that are streamed one by one; `closed` tells whether the pipeline
abandoned the answer (a client that went away cancels the upstream call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import msgspec


class MockRequest(msgspec.Struct, frozen=True):
    url: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> object:
        return msgspec.json.decode(self.body)


class MockResponse:
    def __init__(self, status: int = 200, body: bytes | list[bytes] = b"", headers: Mapping[str, str] | None = None,
                 *, gate: asyncio.Event | None = None) -> None:
        self.status = status
        self._parts = [body] if isinstance(body, bytes) else list(body)
        self.headers: Mapping[str, str] = {"content-type": "application/json", **(headers or {})}
        self._gate = gate  # chunks after the first wait for it (a stream the test holds open)
        self.closed = False
        self.released = False
        self.sent = 0

    async def read(self) -> bytes:
        return b"".join(self._parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self._parts):
            if i and self._gate is not None:
                await self._gate.wait()
            if self.closed:
                return
            self.sent += 1
            yield part

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


Handler = Callable[[MockRequest], Awaitable[MockResponse]]


class MockTransport:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.responses: list[MockResponse] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str], first_byte_s: float = 60.0) -> MockResponse:
        req = MockRequest(url, body, headers)
        self.requests.append(req)
        resp = await self.handler(req)
        self.responses.append(resp)
        return resp

    async def get(self, url: str, headers: dict[str, str], timeout_s: float) -> MockResponse:
        return MockResponse(200, b'{"data": []}')

    def pool_state(self) -> tuple[int, int]:
        return 0, 0

    async def close(self) -> None:
        return None
