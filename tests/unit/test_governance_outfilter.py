"""Output policies on streams: windows of 4 KB / 100 ms, redaction across chunk boundaries, blocks."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from gateway.governance.outfilter import OutputGuard
from gateway.governance.policies import Policy, PolicyViolation
from gateway.governance.settings import PolicySpec
from gateway.pipeline.context import EndpointSpec, PolicyFlag, RequestContext

CHAT = EndpointSpec("chat", "openai")
MESSAGES = EndpointSpec("messages", "anthropic")


def guard(*specs: PolicySpec) -> OutputGuard:
    stats: Counter[str] = Counter()
    return OutputGuard([Policy(s, None, stats) for s in specs])


PII_REDACT = PolicySpec(name="pii", kind="pii", action="redact", on="output")
DENY_BLOCK = PolicySpec(name="deny", kind="deny", patterns=["secret plan"], on="output")


def chat_event(text: str) -> bytes:
    body = {"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def anthropic_event(text: str) -> bytes:
    body = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return b"event: content_block_delta\ndata: " + json.dumps(body).encode() + b"\n\n"


async def chunks(parts: list[bytes], pause: float = 0.0) -> AsyncIterator[bytes]:
    for p in parts:
        if pause:
            await asyncio.sleep(pause)
        yield p


async def collect(g: OutputGuard, ctx: RequestContext, parts: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in g.stream(ctx, parts)])


def texts(sse: bytes) -> str:
    out = []
    for block in sse.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                obj = json.loads(line[6:])
                if obj.get("choices"):
                    out.append(obj["choices"][0]["delta"].get("content") or "")
                elif obj.get("type") == "content_block_delta":
                    out.append(obj["delta"]["text"])
    return "".join(out)


async def test_redaction_finds_values_split_across_chunks() -> None:
    text = "Write to jane.roe@example.org or call +1 415 555 0134 today, card 4111 1111 1111 1111."
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    stop = b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    parts = [chat_event(p) for p in pieces] + [stop, b"data: [DONE]\n\n"]
    out = await collect(guard(PII_REDACT), RequestContext(CHAT, {}), chunks(parts))
    assert texts(out) == ("Write to [REDACTED_EMAIL] or call [REDACTED_PHONE] today, card [REDACTED_CARD].")
    assert out.index(b'"finish_reason":"stop"') > out.rindex(b"REDACTED")  # the order of events is kept
    assert out.endswith(b"data: [DONE]\n\n")


async def test_anthropic_stream_redaction() -> None:
    text = "mail bob@example.com now"
    parts = [anthropic_event(text[i:i + 4]) for i in range(0, len(text), 4)]
    parts.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    out = await collect(guard(PII_REDACT), RequestContext(MESSAGES, {}), chunks(parts))
    assert texts(out) == "mail [REDACTED_EMAIL] now"
    assert b"event: content_block_delta" in out


async def test_block_mid_stream_ends_it_with_an_error_event() -> None:
    parts = [chat_event("the secret "), chat_event("plan is"), chat_event(" here")]
    out = await collect(guard(DENY_BLOCK), RequestContext(CHAT, {}), chunks(parts))
    assert b"secret" not in out.split(b"data: {\"error\"")[0]  # nothing of the window went out
    assert json.loads(out.split(b"data: ")[-1])["error"]["code"] == "content_policy_violation"


async def test_block_in_anthropic_wire_is_an_error_event() -> None:
    out = await collect(guard(DENY_BLOCK), RequestContext(MESSAGES, {}), chunks([anthropic_event("secret plan")]))
    assert out.startswith(b"event: error\ndata: ")
    assert json.loads(out.split(b"data: ")[1])["error"]["type"] == "invalid_request_error"


async def test_a_match_straddling_two_windows_is_still_blocked() -> None:
    first = chat_event("x" * 4100 + " the secret")  # over 4 KB: its own window
    out = await collect(guard(DENY_BLOCK), RequestContext(CHAT, {}), chunks([first, chat_event(" plan")]))
    assert b'"error"' in out


async def test_windows_flush_within_100_ms_on_a_slow_stream() -> None:
    g = guard(DENY_BLOCK)
    arrivals: list[float] = []
    t0 = time.perf_counter()
    async for _ in g.stream(RequestContext(CHAT, {}), chunks([chat_event("a"), chat_event("b")], pause=0.3)):
        arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) == 2
    assert arrivals[0] < 0.3 + 0.1 + 0.05  # the first chunk did not wait for the second (at 0.6 s)
    assert arrivals[1] - arrivals[0] > 0.15


async def test_large_bursts_flush_at_4_kb() -> None:
    g = guard(DENY_BLOCK)
    sizes = [len(c) async for c in g.stream(RequestContext(CHAT, {}), chunks([chat_event("y" * 500)] * 40))]
    assert len(sizes) > 1 and max(sizes) < 4096 + 700


async def test_plain_answers() -> None:
    ctx = RequestContext(CHAT, {})
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "mail a@b.io"}}]})
    out = await guard(PII_REDACT).check_plain(ctx, body.encode())
    assert json.loads(out)["choices"][0]["message"]["content"] == "mail [REDACTED_EMAIL]"
    untouched = json.dumps({"choices": [{"index": 0, "message": {"content": "fine"}}]}).encode()
    assert await guard(PII_REDACT).check_plain(ctx, untouched) is untouched
    with pytest.raises(PolicyViolation):
        blocked = {"content": [{"type": "text", "text": "secret plan"}]}
        await guard(DENY_BLOCK).check_plain(ctx, json.dumps(blocked).encode())


async def test_flag_records_without_changing() -> None:
    ctx = RequestContext(CHAT, {})
    flag = guard(PolicySpec(name="f", kind="pii", action="flag", on="output"))
    body = json.dumps({"choices": [{"message": {"content": "call 415-555-0134"}}]}).encode()
    assert await flag.check_plain(ctx, body) == body
    assert ctx.policy_flags == [PolicyFlag(policy="f", reason="phone", direction="output")]
