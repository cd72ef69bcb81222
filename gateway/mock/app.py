"""The mock upstream: an RSGI app answering in OpenAI and Anthropic shapes with a fixed latency.

Behaviour comes from `MockSettings` (CLI flags) and can be changed per request with a body field
`"mock": {"status": 500, "latency_ms": 0, "chunks": 5, "chunk_interval_ms": 20}`. It records the
last requests with the usage it billed (`GET /_mock/requests`) and stream outcomes (`GET
/_mock/stats`), so tests and operators see exactly what the gateway sent. Both providers' prompt
caches are simulated (caching.py); `DELETE /_mock/caches` empties them.

Fault modes for the fault suite (tests/faults/), switched at run time with `PUT /_mock/settings`
(a partial `MockSettings` as JSON; the answer is the settings now in force): `error_rate` 1.0 is
an error storm, `black_hole` accepts a request and never answers it (until the client leaves).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import msgspec

from gateway.mock import anthropic as anth
from gateway.mock import bedrock as bed
from gateway.mock import gemini as gem
from gateway.mock import responses as oai
from gateway.mock.caching import PromptCaches, bedrock_as_anthropic, has_cache_points, openai_prompt

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


class MockSettings(msgspec.Struct):
    latency_ms: float = 60.0
    stream_chunks: int = 10
    chunk_interval_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    cached_tokens: int = 0  # a fixed OpenAI cached_tokens on every answer; 0: simulate prefix caching
    # Bedrock mode: the secret the SigV4 signatures are checked with ("" = the header's shape only).
    aws_secret: str = ""
    record: int = 500  # how many requests /_mock/requests keeps
    black_hole: bool = False  # accept requests, read them, never answer (a deployment that hangs)
    models: tuple[str, ...] = ("mock-gpt-4o", "mock-claude", "gpt-4o-mini", "claude-house")


class MockState:
    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=settings.record)
        self.counter = 0
        self.stats = {"requests": 0, "streams_started": 0, "streams_completed": 0, "streams_cancelled": 0,
                      "errors": 0, "black_holed": 0,
                      # frames a cancelled stream had sent when the client left, at most (disconnect tests)
                      "cancelled_max_frames": 0}
        self.caches = PromptCaches()  # both providers' prompt caches, simulated


def _error_body(status: int, anthropic: bool) -> bytes:
    msg = f"mock upstream error {status}"
    if anthropic:
        etype = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return _enc.encode({"type": "error", "error": {"type": etype, "message": msg}})
    etype = {429: "rate_limit_error"}.get(status, "server_error")
    return _enc.encode({"error": {"message": msg, "type": etype, "param": None, "code": None}})


class MockApp:
    def __init__(self, settings: MockSettings | None = None, prefix: str = "") -> None:
        self.state = MockState(settings or MockSettings())
        self.prefix = prefix

    def __rsgi_init__(self, loop: Any) -> None:
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        pass

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path[len(self.prefix):] if self.prefix else scope.path
        await self.handle(scope.method, path, scope.headers, proto)

    async def handle(self, method: str, path: str, headers: Any, proto: Any) -> None:
        st = self.state
        if method == "GET":
            if path == "/_mock/requests":
                return proto.response_bytes(200, JSON, _enc.encode(list(st.requests)))
            if path == "/_mock/stats":
                return proto.response_bytes(200, JSON, _enc.encode(st.stats))
            if path in ("/v1/models", "/models"):
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in st.settings.models]
                return proto.response_bytes(200, JSON, _enc.encode({"object": "list", "data": data}))
            if path in ("/", "/healthz"):
                return proto.response_bytes(200, JSON, b'{"status":"ok"}')
            return proto.response_bytes(404, JSON, b'{"error":{"message":"not found","type":"not_found"}}')
        if method == "PUT" and path == "/_mock/settings":
            return self._set(proto, await proto())
        if method == "DELETE" and path == "/_mock/requests":
            st.requests.clear()
            return proto.response_bytes(200, JSON, b"{}")
        if method == "DELETE" and path == "/_mock/caches":
            st.caches = PromptCaches()
            return proto.response_bytes(200, JSON, b"{}")
        if method != "POST":
            return proto.response_bytes(405, JSON, b'{"error":{"message":"method not allowed"}}')
        raw = await proto()
        try:
            body = _dec.decode(raw)
        except msgspec.DecodeError:
            return proto.response_bytes(400, JSON, b'{"error":{"message":"mock: body is not JSON"}}')
        st.counter += 1
        st.stats["requests"] += 1
        n_id = st.counter
        entry: dict[str, Any] = {"method": method, "path": path, "headers": dict(headers.items()), "body": body,
                                 "time": time.time()}
        st.requests.append(entry)
        opts = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        if st.settings.black_hole:
            st.stats["black_holed"] += 1
            await proto.client_disconnect()  # never answer; the request ends when its client gives up
            return
        latency = float(opts.get("latency_ms", st.settings.latency_ms)) / 1000.0
        if latency > 0:
            await asyncio.sleep(latency)
        is_anthropic = path.endswith("/messages")
        status = int(opts.get("status", 0)) or (
            st.settings.error_status if st.settings.error_rate and random.random() < st.settings.error_rate else 0
        )
        if path.startswith("/v1beta/models/"):
            return await self._gemini(proto, path, headers, body, n_id, status, entry)
        if path.startswith("/model/"):
            return await self._bedrock(proto, path, headers, raw, body, n_id, status, entry)
        if status >= 400:
            st.stats["errors"] += 1
            hdrs = [*JSON, ("x-request-id", f"req_mock{n_id}"), ("retry-after", "0")]
            return proto.response_bytes(status, hdrs, _error_body(status, is_anthropic))
        chunks = int(opts.get("chunks", st.settings.stream_chunks))
        pace = float(opts.get("chunk_interval_ms", st.settings.chunk_interval_ms)) / 1000.0
        stream = bool(body.get("stream"))
        if is_anthropic:
            return await self._anthropic(proto, body, n_id, stream, chunks, pace, entry)
        return await self._openai(proto, path, body, n_id, stream, chunks, pace, entry)

    def _set(self, proto: Any, raw: bytes) -> None:
        try:
            changes = _dec.decode(raw)
            fields = set(MockSettings.__struct_fields__)
            if not isinstance(changes, dict) or not set(changes) <= fields:
                raise ValueError(f"expected an object with some of {sorted(fields)}")
            merged = {**msgspec.structs.asdict(self.state.settings), **changes}
            self.state.settings = msgspec.convert(merged, MockSettings)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            body = _enc.encode({"error": {"message": f"mock: bad settings: {exc}", "type": "invalid_request_error"}})
            return proto.response_bytes(400, JSON, body)
        return proto.response_bytes(200, JSON, _enc.encode(self.state.settings))

    def _openai_headers(self, n_id: int) -> list[tuple[str, str]]:
        return [("x-request-id", f"req_mock{n_id}"), ("x-ratelimit-remaining-requests", "9999"),
                ("x-ratelimit-limit-requests", "10000"), ("openai-processing-ms", "60")]

    async def _openai(self, proto: Any, path: str, body: dict[str, Any], n_id: int, stream: bool,
                      chunks: int, pace: float, entry: dict[str, Any]) -> None:
        hdrs = self._openai_headers(n_id)
        endpoint = path.rsplit("/", 1)[-1]
        cached, prompt_tokens = self.state.caches.openai(str(body.get("model")), openai_prompt(path, body))
        if self.state.settings.cached_tokens:
            cached = self.state.settings.cached_tokens
        usage = (cached, prompt_tokens)
        entry["usage"] = {"prompt_tokens": prompt_tokens, "cached_tokens": min(cached, prompt_tokens)}
        if endpoint == "completions" and path.endswith("/chat/completions"):
            if stream:
                events = [(None, c) for c in oai.chat_chunks(body, n_id, chunks, usage)]
                return await self._stream(proto, hdrs, events, pace, done=True)
            return proto.response_bytes(200, JSON + hdrs, _enc.encode(oai.chat_completion(body, n_id, usage)))
        if endpoint == "completions":
            if stream:
                events = [(None, c) for c in oai.completion_chunks(body, n_id, chunks)]
                return await self._stream(proto, hdrs, events, pace, done=True)
            return proto.response_bytes(200, JSON + hdrs, _enc.encode(oai.text_completion(body, n_id)))
        if endpoint == "embeddings":
            return proto.response_bytes(200, JSON + hdrs, _enc.encode(oai.embeddings(body)))
        if endpoint == "responses":
            if stream:
                named = [(name, data) for name, data in oai.responses_events(body, n_id, chunks, usage)]
                return await self._stream(proto, hdrs, named, pace, done=False)
            return proto.response_bytes(200, JSON + hdrs, _enc.encode(oai.responses_object(body, n_id, usage)))
        return proto.response_bytes(404, JSON, b'{"error":{"message":"mock: unknown endpoint"}}')

    async def _anthropic(self, proto: Any, body: dict[str, Any], n_id: int, stream: bool, chunks: int,
                         pace: float, entry: dict[str, Any]) -> None:
        hdrs = [("request-id", f"req_mock{n_id}"), ("anthropic-ratelimit-requests-remaining", "9999")]
        cache = self.state.caches.anthropic(body)
        created, read, total = cache
        entry["usage"] = {"input_tokens": max(1, total - created - read), "cache_creation_input_tokens": created,
                          "cache_read_input_tokens": read}
        if stream:
            events = [(name, data) for name, data in anth.events(body, n_id, chunks, cache)]
            return await self._stream(proto, hdrs, events, pace, done=False)
        return proto.response_bytes(200, JSON + hdrs, _enc.encode(anth.message(body, n_id, cache)))

    async def _gemini(self, proto: Any, path: str, headers: Any, body: dict[str, Any], n_id: int, status: int,
                      entry: dict[str, Any]) -> None:
        """Gemini mode: /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse."""
        hdrs = [("x-request-id", f"req_mock{n_id}")]
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if not headers.get("x-goog-api-key"):
            err = gem.error(403, "Method doesn't allow unregistered callers. Please use an API key.")
            return proto.response_bytes(403, JSON + hdrs, _enc.encode(err))
        if status >= 400:
            err = gem.error(status, f"mock upstream error {status}")
            return proto.response_bytes(status, JSON + hdrs, _enc.encode(err))
        if method not in ("generateContent", "streamGenerateContent") or not isinstance(body.get("contents"), list):
            err = gem.error(400, "Invalid JSON payload received: contents is required.")
            return proto.response_bytes(400, JSON + hdrs, _enc.encode(err))
        if gem.unsigned_call(body):
            err = gem.error(400, "Function call is missing a thought_signature in functionCall parts.")
            return proto.response_bytes(400, JSON + hdrs, _enc.encode(err))
        cached = self.state.settings.cached_tokens
        full = gem.generate(body, model, n_id, cached)
        entry["usage"] = full["usageMetadata"]
        if method == "streamGenerateContent":
            st = self.state.settings
            events = gem.stream(body, model, n_id, st.stream_chunks, cached)
            frames = [b"data: " + _enc.encode(e) + b"\r\n\r\n" for e in events]  # Gemini ends lines CRLF
            return await self._send_frames(proto, SSE + hdrs, frames, st.chunk_interval_ms / 1000.0)
        return proto.response_bytes(200, JSON + hdrs, _enc.encode(full))

    async def _bedrock(self, proto: Any, path: str, headers: Any, raw: bytes, body: dict[str, Any], n_id: int,
                       status: int, entry: dict[str, Any]) -> None:
        """Bedrock mode: /model/{modelId}/converse and /converse-stream (event-stream frames), SigV4 checked."""
        hdrs = [("x-amzn-requestid", f"mock-{n_id}")]
        wrong = bed.check_signature("POST", path, dict(headers.items()), raw, self.state.settings.aws_secret)
        entry["signature_ok"] = wrong is None
        if wrong is not None:
            return proto.response_bytes(403, JSON + hdrs + bed.error_headers(403), _enc.encode({"message": wrong}))
        if status >= 400:
            return proto.response_bytes(status, JSON + hdrs + bed.error_headers(status),
                                        _enc.encode({"message": f"mock upstream error {status}"}))
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return proto.response_bytes(400, JSON + hdrs + bed.error_headers(400),
                                        _enc.encode({"message": "Malformed input request: messages is required"}))
        cached = self.state.settings.cached_tokens
        cache = None
        if not cached and has_cache_points(body):  # Claude on Bedrock: Anthropic's breakpoint rules
            model = unquote(path.partition("/model/")[2].rpartition("/")[0])
            cache = self.state.caches.anthropic(bedrock_as_anthropic(body, model))
        full = bed.converse(body, n_id, cached, cache)
        entry["usage"] = full["usage"]
        if path.endswith("/converse-stream"):
            st = self.state.settings
            frames = bed.stream(body, n_id, st.stream_chunks, cached, cache)
            return await self._send_frames(proto, [("content-type", "application/vnd.amazon.eventstream"), *hdrs],
                                           frames, st.chunk_interval_ms / 1000.0)
        if path.endswith("/converse"):
            return proto.response_bytes(200, JSON + hdrs, _enc.encode(full))
        return proto.response_bytes(404, JSON + hdrs, _enc.encode({"message": "mock: unknown Bedrock operation"}))

    async def _stream(self, proto: Any, hdrs: list[tuple[str, str]], events: Sequence[tuple[str | None, Any]],
                      pace: float, done: bool) -> None:
        frames = []
        for name, data in events:
            payload = _enc.encode(data)
            frames.append((b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + payload + b"\n\n")
        if done:
            frames.append(b"data: [DONE]\n\n")
        await self._send_frames(proto, SSE + hdrs, frames, pace)

    async def _send_frames(self, proto: Any, hdrs: list[tuple[str, str]], frames: Sequence[bytes],
                           pace: float) -> None:
        st = self.state
        st.stats["streams_started"] += 1
        transport = proto.response_stream(200, hdrs)

        sent = [0]  # frames out so far

        async def pump() -> None:
            for frame in frames:
                await transport.send_bytes(frame)
                sent[0] += 1
                if pace:
                    await asyncio.sleep(pace)

        if not pace:
            try:
                await pump()
                st.stats["streams_completed"] += 1
            except Exception:
                st.stats["streams_cancelled"] += 1
            return
        # Paced streams watch for the client going away, so tests can prove cancellation.
        task = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(proto.client_disconnect())
        finished, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task in finished and task.exception() is None:
            gone.cancel()
            st.stats["streams_completed"] += 1
        else:
            task.cancel()
            gone.cancel()
            st.stats["streams_cancelled"] += 1
            st.stats["cancelled_max_frames"] = max(st.stats["cancelled_max_frames"], sent[0])
