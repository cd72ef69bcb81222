"""Output policies on the answer: whole bodies, and streams in windows of about 4 KB or 100 ms.

Implements gateway.pipeline.respond.OutputFilter. A stream is read into a window until it holds 4 KB or its
first byte is 100 ms old; then the window's complete SSE events are checked and passed on. Block
and flag checks see the window's text plus the tail of the previous one (a match may straddle two
windows). With a redacting policy, consecutive text deltas are merged into one event and the last
64 characters are held back (never cutting through a match), so a value split across chunks is
still found; a non-text event (stop, usage) releases everything held. A block in the middle of a
stream ends it with an error event in the upstream's wire format, which both SDKs raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import PolicyViolation
from gateway.governance.content import event_text, output_texts
from gateway.governance.policies import Policy, apply, redact_slots
from gateway.protocol.views import decode_any

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext

WINDOW_BYTES = 4096
WINDOW_S = 0.100
HOLD = 64  # characters held back for redaction
OVERLAP = 256  # characters of the previous window seen again by block/flag checks
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class _Stream:
    __slots__ = ("done", "overlap", "pending", "template")

    def __init__(self) -> None:
        self.pending = ""  # text not yet sent (redaction mode)
        self.template: tuple[bytes | None, Any, Any, Any] | None = None  # (event name, obj, container, key)
        self.overlap = ""
        self.done = False


def _error_event(ctx: RequestContext, message: str) -> bytes:
    if ctx.endpoint.protocol == "anthropic":  # the filter sees the client's wire (after any translation)
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        return b"event: error\ndata: " + _enc.encode(body) + b"\n\n"
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "content_policy_violation"}}
    return b"data: " + _enc.encode(body) + b"\n\n"


def _parse(raw: bytes) -> tuple[bytes | None, bytes | None]:
    name = data = None
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].lstrip(b" ")
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, data


class OutputGuard:
    def __init__(self, policies: list[Policy]) -> None:
        self.redact = [p for p in policies if p.action == "redact"]
        self.checks = [p for p in policies if p.action != "redact"]

    async def _check(self, ctx: RequestContext, text: str) -> None:
        for p in self.checks:
            apply(ctx, p, await p.evaluate(ctx, text, "output"), "output")

    async def check_plain(self, ctx: RequestContext, body: bytes) -> bytes:
        try:
            data = decode_any(body)
        except Exception:
            return body  # not a JSON object: nothing this filter understands
        slots = output_texts(data)
        if not slots:
            return body
        changed = bool(self.redact) and redact_slots(self.redact, slots) > 0
        if self.checks:
            await self._check(ctx, "\n".join(t for _, _, t in slots))
        return _enc.encode(data) if changed else body

    async def stream(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        it = chunks.__aiter__()
        buf = bytearray()
        state = _Stream()
        started = 0.0
        nxt: asyncio.Future[bytes] | None = None
        try:
            while not state.done:
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                timeout = max(0.0, started + WINDOW_S - loop.time()) if buf else None
                done, _ = await asyncio.wait({nxt}, timeout=timeout)
                if done:
                    try:
                        chunk = nxt.result()
                    except StopAsyncIteration:
                        nxt = None
                        break
                    nxt = None
                    if not buf:
                        started = loop.time()
                    buf += chunk
                    if len(buf) < WINDOW_BYTES and loop.time() - started < WINDOW_S:
                        continue
                out = await self._window(ctx, state, buf, final=False)
                started = loop.time()
                if out:
                    yield out
            if not state.done:
                out = await self._window(ctx, state, buf, final=True)
                if out:
                    yield out
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()

    async def _window(self, ctx: RequestContext, state: _Stream, buf: bytearray, final: bool) -> bytes:
        cut = len(buf) if final else buf.rfind(b"\n\n") + 2
        if cut <= 1:
            return b""
        block = bytes(buf[:cut])
        del buf[:cut]
        out: list[bytes] = []
        seen: list[str] = []
        for raw in block.split(b"\n\n"):
            if not raw.strip():
                continue
            name, data = _parse(raw)
            slot = None
            if data is not None and data != b"[DONE]":
                try:
                    obj = _dec.decode(data)
                    slot = event_text(obj)
                except msgspec.DecodeError:
                    slot = None
            if slot is None or not slot[2]:
                if self.redact and state.pending:
                    out.append(self._release(state, everything=True))
                out.append(raw + b"\n\n")
                continue
            seen.append(slot[2])
            if self.redact:
                state.pending += slot[2]
                state.template = (name, obj, slot[0], slot[1])
            else:
                out.append(raw + b"\n\n")
        text = "".join(seen)
        if self.checks and text:
            try:
                await self._check(ctx, state.overlap + text)
            except PolicyViolation as exc:
                state.done = True
                return _error_event(ctx, exc.message)
            state.overlap = (state.overlap + text)[-OVERLAP:]
        if self.redact and state.pending:
            out.append(self._release(state, everything=final))  # text after the window's last other event
        return b"".join(out)

    def _release(self, state: _Stream, everything: bool) -> bytes:
        """One event carrying the redacted pending text (all of it, or all but the held tail)."""
        text = state.pending
        cut = len(text) if everything else max(0, len(text) - HOLD)
        if not everything:
            spans = sorted(span for p in self.redact if p.detector for span in p.detector.spans(text))
            for start, end in reversed(spans):  # right to left: a moved cut is checked again
                if start < cut < end:
                    cut = start
        head, state.pending = text[:cut], text[cut:]
        if not head or state.template is None:
            return b""
        slots = [({"t": head}, "t", head)]
        redact_slots(self.redact, slots)
        name, obj, container, key = state.template
        container[key] = slots[0][0]["t"]
        frame = (b"event: " + name + b"\n" if name else b"") + b"data: " + _enc.encode(obj) + b"\n\n"
        return frame

