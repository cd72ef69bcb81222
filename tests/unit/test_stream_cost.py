"""The cost of a streamed answer on its usage event: the bytes (any chunking), and the figure equal to
the ledger's for passed-through and translated streams in both protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.costs.prices import ModelPrice, price_tokens
from gateway.observe.audit_store import AuditQuery
from gateway.pipeline.stream_cost import StreamCost
from gateway.protocol.usage import Usage
from tests.unit.spine import Rig, chat

PRICE = ModelPrice(input=2.5, output=10.0)
USAGE = Usage(input=12, output=30)


def openai_stream(eol: bytes = b"\n\n") -> bytes:
    chunks: list[dict[str, Any]] = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "usage"}}], "usage": None},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}},
    ]
    return b"".join(b"data: " + msgspec.json.encode(c) + eol for c in chunks) + b"data: [DONE]" + eol


def anthropic_stream() -> bytes:
    events = [("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 12}}}),
              ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "\"message_delta\""}}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                 "usage": {"output_tokens": 30}}),
              ("message_stop", {"type": "message_stop"})]
    return b"".join(b"event: " + n.encode() + b"\ndata: " + msgspec.json.encode(d) + b"\n\n" for n, d in events)


def run(stamp: StreamCost, pieces: list[bytes]) -> tuple[list[bytes], bytes]:
    sent = [stamp.feed(p) for p in pieces]
    return sent, b"".join(sent) + stamp.finish(USAGE)


def events(stream: bytes) -> list[Any]:
    out = []
    for frame in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [ln[6:] for ln in frame.split(b"\n") if ln.startswith(b"data: ")]
        if data and data[0] != b"[DONE]":
            out.append(msgspec.json.decode(data[0]))
    return out


@pytest.mark.parametrize("eol", [b"\n\n", b"\r\n\r\n"])
def test_openai_usage_chunk_gets_the_cost_however_the_stream_is_cut(eol: bytes) -> None:
    whole = openai_stream(eol)
    _, expected = run(StreamCost(PRICE, anthropic=False), [whole])
    parsed = events(expected)
    assert parsed[-1]["x_gateway"] == {"cost_usd": pytest.approx(price_tokens(USAGE, PRICE), abs=1e-8)}
    assert all("x_gateway" not in e for e in parsed[:-1])
    assert expected.replace(b',"x_gateway":{"cost_usd":0.00033000}', b"") == whole  # nothing else changed
    for cut in range(1, len(whole)):
        for cut2 in (cut + 1, cut + 7, len(whole)):
            pieces = [whole[:cut], whole[cut:cut2], whole[cut2:]]
            assert run(StreamCost(PRICE, anthropic=False), pieces)[1] == expected, (cut, cut2)


def test_events_before_the_usage_event_pass_at_once() -> None:
    whole = openai_stream()
    frames = [f + b"\n\n" for f in whole.split(b"\n\n") if f]
    sent, _ = run(StreamCost(PRICE, anthropic=False), frames)
    assert sent[:2] == frames[:2]  # content and finish chunks: untouched, not delayed
    assert sent[2:] == [b"", b""]  # the usage chunk and [DONE] wait for the end of the upstream stream


def test_anthropic_message_delta_gets_the_cost() -> None:
    whole = anthropic_stream()
    for cut in range(1, len(whole), 5):
        _, out = run(StreamCost(PRICE, anthropic=True), [whole[:cut], whole[cut:]])
        parsed = events(out)
        stamped = [e for e in parsed if "x_gateway" in e]
        assert [e["type"] for e in stamped] == ["message_delta"]  # not the text that mentions it
        assert stamped[0]["x_gateway"]["cost_usd"] == pytest.approx(price_tokens(USAGE, PRICE), abs=1e-8)
        assert parsed[-1] == {"type": "message_stop"}


def test_a_stream_without_usage_or_without_its_end_is_passed_as_it_came() -> None:
    no_usage = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    assert run(StreamCost(PRICE, anthropic=False), [no_usage[:9], no_usage[9:]])[1] == no_usage
    s = StreamCost(PRICE, anthropic=False)
    whole = openai_stream()
    assert s.feed(whole) + s.finish(None) == whole  # usage unknown: no figure rather than a wrong one


CASES = [  # (client path, model, body extras): both protocols, passed through and translated
    ("/v1/chat/completions", "gpt", {"stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", "claude", {"stream_options": {"include_usage": True}}),
    ("/v1/messages", "claude", {"max_tokens": 100}),
    ("/v1/messages", "gpt", {"max_tokens": 100}),
]


@pytest.mark.parametrize(("path", "model", "extra"), CASES, ids=["openai", "openai-from-anthropic",
                                                                  "anthropic", "anthropic-from-openai"])
async def test_the_streamed_cost_is_the_ledgers_figure(tmp_path: Path, path: str, model: str,
                                                       extra: dict[str, Any]) -> None:
    async with Rig(tmp_path) as rig:
        proto = await rig.send(path, chat(model, stream=True, **extra))
        await rig.settled()
        observer = rig.app.rt.observer if rig.app.rt else None
        assert observer is not None and observer.audit is not None and observer.audit_sink is not None
        await observer.audit.flush()
        [entry] = (await observer.audit_sink.query(AuditQuery())).entries
    assert proto.status == 200 and entry.cost_usd > 0
    stamped = [e for e in events(proto.streamed) if "x_gateway" in e]
    assert len(stamped) == 1
    want = "message_delta" if path == "/v1/messages" else "chat.completion.chunk"
    assert stamped[0].get("type", stamped[0].get("object")) == want and stamped[0]["usage"]
    assert stamped[0]["x_gateway"]["cost_usd"] == pytest.approx(entry.cost_usd, abs=1e-8)


async def test_no_usage_asked_no_figure(tmp_path: Path) -> None:
    async with Rig(tmp_path) as rig:
        proto = await rig.send("/v1/chat/completions", chat("gpt", stream=True))
    assert proto.status == 200 and b"x_gateway" not in proto.streamed


async def test_an_upstream_that_breaks_after_the_usage_chunk_still_delivers_it(tmp_path: Path) -> None:
    from collections.abc import AsyncIterator

    from gateway.errors import UpstreamUnreachable
    from gateway.providers.mock_transport import MockRequest, MockResponse

    frames = [f + b"\n\n" for f in openai_stream().split(b"\n\n") if f][:-1]  # no [DONE]: it breaks first

    class Broken(MockResponse):
        async def chunks(self) -> AsyncIterator[bytes]:
            for f in frames:
                yield f
            raise UpstreamUnreachable("gone mid-answer")

    async def handler(req: MockRequest) -> MockResponse:
        return Broken(200, frames, {"content-type": "text/event-stream"})

    async with Rig(tmp_path, {"oa": handler}) as rig:
        proto = await rig.send("/v1/chat/completions", chat("gpt", stream=True))
    assert proto.streamed == b"".join(frames)  # as the provider sent it, without a figure
