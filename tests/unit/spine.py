"""A gateway worker without a network: the real app and pipeline over in-memory providers.

`Rig` builds `GatewayApp` with a `MockTransport` per provider and drives it through a fake RSGI
protocol object, so the spine (receive, auth, routing, limits, policies, cache, transform, forward,
respond, after-work) is tested as a unit: no sockets, no Granian, no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.app import GatewayApp
from gateway.config import load_config
from gateway.mock import anthropic as mock_anth
from gateway.mock import responses as mock_oai
from gateway.providers.mock_transport import MockRequest, MockResponse, MockTransport


class Scope:
    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.headers = headers


class StreamSink:
    def __init__(self, proto: Proto) -> None:
        self.proto = proto

    async def send_bytes(self, data: bytes) -> None:
        self.proto.chunks.append(data)
        self.proto.sent_chunk.set()


class Proto:
    """The RSGI HTTP protocol object, as the pipeline uses it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0
        self.headers: dict[str, str] = {}
        self.plain: bytes | None = None
        self.chunks: list[bytes] = []
        self.sent_chunk = asyncio.Event()
        self.gone = asyncio.Event()  # set it to make the client go away

    async def __call__(self) -> bytes:
        return self.body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.plain = status, dict(headers), body

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> StreamSink:
        self.status, self.headers = status, dict(headers)
        return StreamSink(self)

    async def client_disconnect(self) -> None:
        await self.gone.wait()

    def json(self) -> Any:
        assert self.plain is not None, "no plain answer was sent"
        return msgspec.json.decode(self.plain)

    @property
    def streamed(self) -> bytes:
        return b"".join(self.chunks)


Handler = Callable[[MockRequest], Awaitable[MockResponse]]

BASE_CONFIG: dict[str, Any] = {
    "auth": {"enabled": False},
    "providers": {
        "oa": {"kind": "openai", "base_url": "http://openai.test/v1"},
        "oa2": {"kind": "openai", "base_url": "http://openai2.test/v1"},
        "an": {"kind": "anthropic", "base_url": "http://anthropic.test"},
    },
    "models": [
        {"name": "gpt", "deployments": [{"provider": "oa", "model": "gpt-4o"}], "fallbacks": ["gpt-backup"]},
        {"name": "gpt-backup", "deployments": [{"provider": "oa2", "model": "gpt-4o-mini"}]},
        {"name": "claude", "deployments": [{"provider": "an", "model": "claude-sonnet-4-5"}]},
        {"name": "gpt-or-claude", "deployments": [{"provider": "oa", "model": "gpt-4o"}],
         "fallbacks": ["claude"]},
    ],
    "retries": {"attempts": 1, "backoff_ms": 1, "max_backoff_ms": 1},
    "cache": {"semantic": False},
    "observe": {"metrics": False},
}


async def openai_ok(req: MockRequest) -> MockResponse:
    body = req.json()
    assert isinstance(body, dict)
    if body.get("stream"):
        chunks = mock_oai.chat_chunks(body, 1, 3, 0)
        frames = [b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
        return MockResponse(200, frames, {"content-type": "text/event-stream", "x-request-id": "req_1"})
    return MockResponse(200, msgspec.json.encode(mock_oai.chat_completion(body, 1, 0)), {"x-request-id": "req_1"})


async def anthropic_ok(req: MockRequest) -> MockResponse:
    body = req.json()
    assert isinstance(body, dict)
    if body.get("stream"):
        frames = [b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
                  for name, data in mock_anth.events(body, 1, 3, (0, 0))]
        return MockResponse(200, frames, {"content-type": "text/event-stream", "request-id": "req_a"})
    return MockResponse(200, msgspec.json.encode(mock_anth.message(body, 1, (0, 0))), {"request-id": "req_a"})


class Rig:
    def __init__(self, tmp: Path, handlers: dict[str, Handler] | None = None, **overrides: Any) -> None:
        data = {**BASE_CONFIG, **overrides}
        data["store"] = {"embedded_path": str(tmp / "store.db")}
        data["observe"] = {**BASE_CONFIG["observe"], **overrides.get("observe", {}),
                           "audit_path": str(tmp / "audit.db")}
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(data))
        self.cfg = load_config(path, environ={})
        handlers = {"oa": openai_ok, "oa2": openai_ok, "an": anthropic_ok, **(handlers or {})}
        self.transports = {name: MockTransport(h) for name, h in handlers.items()}
        self.app = GatewayApp(self.cfg, transports=self.transports)

    async def __aenter__(self) -> Rig:
        await self.app.startup(self.cfg)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.shutdown()

    def calls(self, provider: str) -> list[MockRequest]:
        return self.transports[provider].requests

    async def send(self, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None,
                   proto: Proto | None = None) -> Proto:
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        proto = proto or Proto(raw)
        await self.app.__rsgi__(Scope("POST", path, {"content-type": "application/json", **(headers or {})}), proto)
        return proto

    async def settled(self) -> None:
        """The completion signal of the after-work (ledger, audit, write-back)."""
        assert self.app.pipeline is not None
        await self.app.pipeline.after.idle()


def chat(model: str = "gpt", text: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
