"""Server-sent events: an incremental parser fed with arbitrary network chunks, and the writer."""

from __future__ import annotations

from collections.abc import Iterable

Event = tuple[str | None, bytes]  # (event name or None, data)


class SSEParser:
    """Splits a byte stream into events, whatever the chunk boundaries are.

    Kept allocation-light: it only joins bytes when an event straddles chunks.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> bool:
        """Part of an event is waiting for the next chunk."""
        return bool(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            ev = _parse_block(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = end + 2
        self._buf = buf[start:]
        return events

    def close(self) -> list[Event]:
        """Whatever is left when the stream ends without a final blank line."""
        rest, self._buf = self._buf, b""
        ev = _parse_block(rest.strip(b"\n")) if rest.strip() else None
        return [ev] if ev is not None else []


def _parse_block(block: bytes) -> Event | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None
    return name, b"\n".join(data)


def encode_event(data: bytes, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def encode_events(events: Iterable[Event]) -> bytes:
    return b"".join(encode_event(data, name) for name, data in events)


DONE = b"data: [DONE]\n\n"
