"""The AWS event-stream binary framing (application/vnd.amazon.eventstream), both ways. Pure.

A message: total length (u32), headers length (u32), the CRC32 of those 8 bytes, the headers, the
payload, then the CRC32 of everything before it. Bedrock's converse-stream answers with these; the
mock writes them. A frame whose lengths or either CRC are wrong is an error, never skipped: after a
corrupt prelude the next frame's start cannot be trusted.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

_PRELUDE = struct.Struct(">II")
_U32 = struct.Struct(">I")
MIN_MESSAGE = 16  # prelude (12) + message CRC (4)
MAX_MESSAGE = 16 * 1024 * 1024  # the service's own bound on one message

# Header value types: their fixed sizes, or None for length-prefixed ones (6 bytes, 7 string).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    """A frame that is not valid event-stream framing (length, CRC or header encoding)."""


class Message(NamedTuple):
    headers: dict[str, object]
    payload: bytes

    @property
    def event_type(self) -> str:
        """The event's name (":event-type"), or for exceptions the exception's (":exception-type")."""
        return str(self.headers.get(":event-type") or self.headers.get(":exception-type") or "")

    @property
    def message_type(self) -> str:
        return str(self.headers.get(":message-type") or "event")


def _headers(raw: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    i, end = 0, len(raw)
    try:
        while i < end:
            n = raw[i]
            name = raw[i + 1:i + 1 + n].decode()
            i += 1 + n
            kind = raw[i]
            i += 1
            value: object
            if kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, i)
                data = raw[i + 2:i + 2 + length]
                if len(data) != length:
                    raise EventStreamError("header value runs past the headers")
                value = data.decode() if kind == 7 else data
                i += 2 + length
            elif kind in _FIXED:
                size = _FIXED[kind]
                data = raw[i:i + size]
                if len(data) != size:
                    raise EventStreamError("header value runs past the headers")
                value = (True if kind == 0 else False if kind == 1 else
                         int.from_bytes(data, "big", signed=True) if kind in (2, 3, 4, 5, 8) else data)
                i += size
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            if name in out:
                raise EventStreamError(f"duplicate header {name!r}")
            out[name] = value
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    return out


class Decoder:
    """Feed bytes as they arrive; get whole messages back (a message may span any chunks)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message (non-zero at the stream's end means it was cut)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Message]:
        self._buf += chunk
        out: list[Message] = []
        buf = self._buf
        while len(buf) >= 12:
            total, headers_len = _PRELUDE.unpack_from(buf, 0)
            if zlib.crc32(buf[:8]) != _U32.unpack_from(buf, 8)[0]:
                raise EventStreamError("prelude CRC mismatch")
            if total < MIN_MESSAGE or total > MAX_MESSAGE or headers_len > total - MIN_MESSAGE:
                raise EventStreamError(f"impossible lengths (total {total}, headers {headers_len})")
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            del buf[:total]
            if zlib.crc32(frame[:-4]) != _U32.unpack_from(frame, total - 4)[0]:
                raise EventStreamError("message CRC mismatch")
            out.append(Message(_headers(frame[12:12 + headers_len]), frame[12 + headers_len:-4]))
        return out


def _encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        out += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    return bytes(out)


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers (what Bedrock sends: :event-type, :content-type, :message-type)."""
    raw_headers = _encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    body = prelude + _U32.pack(zlib.crc32(prelude)) + raw_headers + payload
    return body + _U32.pack(zlib.crc32(body))


def event(event_type: str, payload: bytes) -> bytes:
    return encode({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                  payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    return encode({":exception-type": exception_type, ":content-type": "application/json",
                   ":message-type": "exception"}, payload)
