"""Stand-ins used only when the `gateway` command is missing: a fixed-latency mock and a bare forwarder.

`make bench` measures `gateway mock` and `gateway serve`; these two RSGI apps let the harness and
its tests run in a tree where the gateway spine is not installed. The forwarder is the calibration
target's app (forwarder.py): Granian + msgspec + aiohttp, one pooled session, bytes in, bytes out.

    granian --interface rsgi benchmarks.harness.standin:mock      (env STANDIN_LATENCY_MS, ...)
    granian --interface rsgi benchmarks.harness.standin:forwarder (env STANDIN_UPSTREAM)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import msgspec

from benchmarks.harness.forwarder import Forwarder

_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def _chat_body(model: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the mock."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
    )


def _chunk(model: str, text: str, finish: str | None) -> bytes:
    delta = {"content": text} if text else {}
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


class _Request(msgspec.Struct):
    model: str = "mock"
    stream: bool = False


class Mock:
    """OpenAI chat shape with a fixed latency; streams N chunks when asked."""

    def __init__(self) -> None:
        self.latency = float(os.environ.get("STANDIN_LATENCY_MS", "60")) / 1000
        self.chunks = int(os.environ.get("STANDIN_STREAM_CHUNKS", "50"))
        self.interval = float(os.environ.get("STANDIN_CHUNK_INTERVAL_MS", "0")) / 1000
        self.decoder = msgspec.json.Decoder(_Request)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        body = await proto()
        if scope.method == "GET":
            proto.response_bytes(200, _JSON, b'{"object":"list","data":[{"id":"mock","object":"model"}]}')
            return
        try:
            req = self.decoder.decode(body) if body else _Request()
        except msgspec.DecodeError:
            proto.response_bytes(400, _JSON, b'{"error":{"message":"bad json"}}')
            return
        await asyncio.sleep(self.latency)
        if not req.stream:
            proto.response_bytes(200, _JSON, _chat_body(req.model))
            return
        transport = proto.response_stream(200, _SSE)
        for i in range(self.chunks):
            await transport.send_bytes(_chunk(req.model, f"tok{i} ", None))
            if self.interval:
                await asyncio.sleep(self.interval)
        await transport.send_bytes(_chunk(req.model, "", "stop"))
        await transport.send_bytes(b"data: [DONE]\n\n")


mock = Mock()
# The stand-in for `gateway serve` is the calibration forwarder itself (benchmarks/harness/forwarder.py).
forwarder = Forwarder(os.environ.get("STANDIN_UPSTREAM"))
