"""The cost of a streamed answer, on the stream itself: headers leave before usage is known, and SDKs
cannot read HTTP trailers, so the event that carries the final usage gets one extra field,

    OpenAI (chat, completions):  the chunk whose `usage` is an object   ...,"x_gateway":{"cost_usd":0.00012345}}
    Anthropic (messages):        the `message_delta` event               ...,"x_gateway":{"cost_usd":0.00012345}}

the same figure, priced from the same usage, as the ledger's (and as `x-gateway-cost-usd` on a
plain answer). SDKs keep unknown fields (openai: `chunk.model_extra`, anthropic: `event.model_extra`
or `getattr(event, "x_gateway")`) and ignore them otherwise.

That event, and anything after it (`[DONE]`, `message_stop`), is held until the upstream stream
ended, when the usage is final; it is the last the provider sends, so nothing waits behind it. Chunks
before it pass through at once, untouched; a chunk that ends mid-event keeps its unfinished tail
until the rest arrives (the usage event might begin there).
"""

from __future__ import annotations

import re

import msgspec

from gateway.costs.prices import ModelPrice, price_tokens
from gateway.protocol.usage import Usage

_dec = msgspec.json.Decoder()
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n")
FIELD = b"x_gateway"


def _last_boundary(buf: bytes) -> int:
    """The offset just past the last complete event in `buf` (0: none)."""
    i, j = buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n")
    return max(i + 2 if i >= 0 else 0, j + 4 if j >= 0 else 0)


def _data(event: bytes) -> bytes:
    i = event.find(b"\ndata:")
    at = 0 if event.startswith(b"data:") else (i + 1 if i >= 0 else -1)
    if at >= 0 and event.find(b"\n", at) < 0 and b"\r" not in event:  # one data line, last: the usual form
        return event[at + 5:].lstrip(b" ")
    lines = [ln[5:].lstrip(b" ") for ln in event.splitlines() if ln.startswith(b"data:")]
    return b"\n".join(lines)


class StreamCost:
    """Finds the usage event in the bytes going to the client and stamps the cost on it at the end."""

    __slots__ = ("anthropic", "held", "marker", "marker2", "price", "tail")

    def __init__(self, price: ModelPrice, anthropic: bool) -> None:
        self.price = price
        self.anthropic = anthropic
        # What the usage event holds and others do not. OpenAI sends `"usage":null` on every chunk
        # when usage was asked for: only an object is a candidate (compact, or as Python spaces it).
        self.marker, self.marker2 = (b'"message_delta"',) * 2 if anthropic else (b'"usage":{', b'"usage": {')
        self.tail = b""  # an unfinished event, waiting for the rest
        self.held: list[bytes] | None = None  # the usage event and everything after it

    def feed(self, chunk: bytes) -> bytes:
        """What may go to the client now."""
        if self.held is not None:
            self.held.append(chunk)
            return b""
        if not self.tail and chunk.endswith(b"\n\n") and self.marker not in chunk and self.marker2 not in chunk:
            return chunk  # whole events, none of them the usage event: the common case
        buf = self.tail + chunk
        cut = _last_boundary(buf)
        complete, self.tail = buf[:cut], buf[cut:]
        start = self._usage_event(complete) if self.marker in complete or self.marker2 in complete else None
        if start is None:
            return complete
        self.held = [complete[start:], self.tail]
        self.tail = b""
        return complete[:start]

    def finish(self, usage: Usage | None) -> bytes:
        """The rest of the stream, the usage event stamped with what `usage` costs."""
        if self.held is None:
            return self.tail
        rest = b"".join(self.held) + self.tail
        m = _BOUNDARY.search(rest)
        end = m.start() if m is not None else len(rest)
        event, after = rest[:end], rest[end:]
        brace = event.rfind(b"}")
        if usage is None or brace < 0:
            return rest
        cost = price_tokens(usage, self.price)
        stamp = b',"%s":{"cost_usd":%s}' % (FIELD, f"{cost:.8f}".encode())
        return event[:brace] + stamp + event[brace:] + after

    def _usage_event(self, complete: bytes) -> int | None:
        """The offset of the event that carries the final usage, if `complete` holds it."""
        start = 0
        for m in _BOUNDARY.finditer(complete):
            event = complete[start:m.start()]
            if self.marker in event or self.marker2 in event:
                try:
                    obj = _dec.decode(_data(event))
                except msgspec.DecodeError:
                    obj = None
                if isinstance(obj, dict) and (obj.get("type") == "message_delta" if self.anthropic
                                              else isinstance(obj.get("usage"), dict)):
                    return start
            start = m.end()
        return None
