"""The incremental SSE parser is indifferent to how the network cuts the stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.sse import SSEParser, encode_event

EVENTS = [(None, b'{"a":1}'), ("message_start", b'{"type":"message_start"}'), (None, b"[DONE]"),
          ("ping", b"{}"), (None, "żółw 🐢".encode())]
STREAM = b"".join(encode_event(d, n) for n, d in EVENTS)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    parser = SSEParser()
    got = [ev for piece in pieces for ev in parser.feed(piece)] + parser.close()
    assert got == EVENTS


def test_crlf_comments_and_multiline_data() -> None:
    parser = SSEParser()
    raw = b": keep-alive\r\n\r\nevent: x\r\ndata: line1\r\ndata: line2\r\n\r\ndata: tail"
    assert parser.feed(raw) == [("x", b"line1\nline2")]
    assert parser.close() == [(None, b"tail")]
