"""Pure translators of OpenAI chat answers back into Anthropic messages (no I/O inside): the plain
answer (`chat_to_message`) and the stream, chunk by chunk (`ChatToMessagesStream`) or as SSE bytes
(`ChatToMessagesSSE`). The request side is messages_to_chat.py; via_chat.py reuses both for the
providers whose own wire is mapped through chat (Gemini, Bedrock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gateway.protocol.sse import SSEParser, encode_event
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.translate import _text_of, _tool_use_blocks

if TYPE_CHECKING:
    from gateway.pipeline.context import Events

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

# OpenAI finish_reason -> Anthropic stop_reason (the inverse of translate.STOP_REASONS, one per reason).
FINISH_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "function_call": "tool_use", "content_filter": "refusal"}


def usage_to_anthropic(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage (prompt includes cached) as Anthropic's (input excludes cache reads)."""
    parsed = parse_usage(usage) if usage else None
    if parsed is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": parsed.input, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": parsed.cache_read, "output_tokens": parsed.output}


def anthropic_usage(usage: Usage) -> dict[str, Any]:
    """The provider's own usage (parsed from its wire) in Anthropic's shape, cache writes included:
    what an OpenAI usage object cannot carry (it has no field for writes)."""
    return {"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_write + usage.cache_write_1h,
            "cache_read_input_tokens": usage.cache_read, "output_tokens": usage.output}


def _message_id(chat_id: Any) -> str:
    return "msg_" + (str(chat_id or "gw").removeprefix("chatcmpl-"))


def chat_to_message(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completion as an Anthropic message (tool_use input parsed from the arguments)."""
    choice = (resp.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    content.extend(_tool_use_blocks(msg.get("tool_calls") or []))
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_to_anthropic(resp.get("usage")),
    }


# ---------------------------------------------------------------------------------------- streaming

StreamEvent = tuple[str, dict[str, Any]]  # (Anthropic event name, its data)


class ChatToMessagesStream:
    """Turns OpenAI chat.completion.chunk objects, one at a time, into Anthropic stream events.

    `feed` takes each decoded chunk, `finish` is called once when the upstream stream ended (its
    `[DONE]` or the connection's end) and closes the open block, then message_delta, message_stop.
    `input_tokens` is what message_start reports before the upstream's usage is known (a local count).
    """

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.usage: dict[str, Any] | None = None  # the upstream's OpenAI usage, once it came
        self.native: Usage | None = None  # the provider's own usage when known (wins: it has cache writes)
        self._started = False
        self._finished = False
        self._open: int | None = None  # index of the open content block
        self._open_kind = ""
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self._stop_reason: str | None = None

    def _start(self, chunk_id: Any) -> list[StreamEvent]:
        if self._started:
            return []
        self._started = True
        return [("message_start", {"type": "message_start", "message": {
            "id": _message_id(chunk_id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}})]

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[StreamEvent]:
        events = self._close()
        self._open, self._open_kind = self._blocks, kind
        self._blocks += 1
        events.append(("content_block_start", {"type": "content_block_start", "index": self._open,
                                               "content_block": block}))
        return events

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if self._finished:
            return []
        events = self._start(chunk.get("id"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open_kind != "text" or self._open is None:
                    events += self._open_block("text", {"type": "text", "text": ""})
                events.append(("content_block_delta", {"type": "content_block_delta", "index": self._open,
                                                       "delta": {"type": "text_delta", "text": text}}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop_reason = FINISH_REASONS.get(choice["finish_reason"], "end_turn")
        return events

    def _tool_delta(self, call: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        index = int(call.get("index", 0))
        fn = call.get("function") or {}
        if index not in self._tools:
            events += self._open_block("tool_use", {"type": "tool_use", "id": call.get("id", ""),
                                                    "name": fn.get("name", ""), "input": {}})
            assert self._open is not None
            self._tools[index] = self._open
        if fn.get("arguments"):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": self._tools[index],
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": fn["arguments"]}}))
        return events

    def error(self, error: Any) -> list[StreamEvent]:
        """An upstream error mid-stream: Anthropic ends such a stream with an `error` event, no message_stop."""
        if self._finished:
            return []
        events = self._start(None)
        self._finished = True
        message = error.get("message", "upstream error") if isinstance(error, dict) else str(error)
        events.append(("error", {"type": "error", "error": {"type": "api_error", "message": message}}))
        return events

    def finish(self) -> list[StreamEvent]:
        if self._finished:
            return []
        events = self._start(None) + self._close()
        self._finished = True
        if self.native is not None:
            usage = anthropic_usage(self.native)
        else:
            usage = usage_to_anthropic(self.usage) if self.usage else {"output_tokens": 0}
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": self._stop_reason or "end_turn",
                                                   "stop_sequence": None},
                                         "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events


def emit_events(events: list[StreamEvent], keep: Events | None) -> bytes:
    """Anthropic events as SSE bytes; each kept (name, encoded data) when `keep` is given."""
    out = []
    for name, data in events:
        encoded = _enc.encode(data)
        out.append(encode_event(encoded, name))
        if keep is not None:
            keep.append((name, encoded))
    return b"".join(out)


class ChatToMessagesSSE:
    """OpenAI chat SSE bytes in, Anthropic SSE bytes out (a translate.StreamTranslator)."""

    def __init__(self, model: str, input_tokens: int = 0, keep: Events | None = None) -> None:
        self._translator = ChatToMessagesStream(model, input_tokens)
        self._parser = SSEParser()
        self._keep = keep
        self.usage: Usage | None = None

    def _emit(self, events: list[StreamEvent]) -> bytes:
        return emit_events(events, self._keep)

    def feed(self, chunk: bytes) -> bytes:
        events: list[StreamEvent] = []
        for _, data in self._parser.feed(chunk):
            if data.strip() == b"[DONE]":
                events += self._translator.finish()
                continue
            try:
                obj = _dec.decode(data)
            except msgspec.DecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                events += self._translator.error(obj["error"])
                continue
            events += self._translator.feed(obj)
        return self._emit(events)

    def finish(self) -> bytes:
        rest = self.feed(b"\n\n") if self._parser.pending else b""
        out = rest + self._emit(self._translator.finish())
        self.usage = parse_usage(self._translator.usage)
        return out
