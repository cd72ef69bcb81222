"""AWS event-stream framing: the published vectors (tests/data/eventstream/vectors.json), split
anywhere, and corrupt frames refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol import eventstream

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "eventstream" / "vectors.json").read_text())


def _expected(headers: dict[str, Any]) -> dict[str, object]:
    return {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for k, v in headers.items()}


@pytest.mark.parametrize("name", sorted(VECTORS["positive"]))
def test_a_published_message_decodes(name: str) -> None:
    case = VECTORS["positive"][name]
    [msg] = eventstream.Decoder().feed(bytes.fromhex(case["encoded"]))
    assert msg.headers == _expected(case["headers"])
    assert msg.payload == bytes.fromhex(case["payload"])


def test_every_message_at_once_and_byte_by_byte() -> None:
    cases = [VECTORS["positive"][n] for n in sorted(VECTORS["positive"])]
    raw = b"".join(bytes.fromhex(c["encoded"]) for c in cases)
    dec = eventstream.Decoder()
    got = [m for i in range(len(raw)) for m in dec.feed(raw[i:i + 1])]
    assert [m.payload for m in got] == [bytes.fromhex(c["payload"]) for c in cases]
    assert dec.pending == 0


@pytest.mark.parametrize("name", sorted(VECTORS["negative"]))
def test_a_corrupt_message_is_refused(name: str) -> None:
    with pytest.raises(eventstream.EventStreamError):
        eventstream.Decoder().feed(bytes.fromhex(VECTORS["negative"][name]))


def test_the_encoder_writes_what_the_vectors_hold() -> None:
    case = VECTORS["positive"]["payload_one_str_header"]
    assert eventstream.encode({"content-type": "application/json"}, b"{'foo':'bar'}") == bytes.fromhex(case["encoded"])
    assert eventstream.encode({}, b"") == bytes.fromhex(VECTORS["positive"]["empty"]["encoded"])


def test_a_flipped_bit_anywhere_is_caught() -> None:
    frame = bytearray(eventstream.event("contentBlockDelta", b'{"delta":{"text":"hi"}}'))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(eventstream.EventStreamError):
            eventstream.Decoder().feed(bytes(bad) + bytes(64))  # padding: a shortened length still completes


def test_a_cut_message_stays_pending() -> None:
    frame = eventstream.event("messageStop", b'{"stopReason":"end_turn"}')
    dec = eventstream.Decoder()
    assert dec.feed(frame[:-3]) == []
    assert dec.pending == len(frame) - 3
