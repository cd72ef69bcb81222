"""Providers reached through OpenAI chat: one wire mapping per provider, two translators each.

A provider whose wire is neither OpenAI nor Anthropic (Gemini, Bedrock Converse) implements a
`ChatCore`: an OpenAI chat request to its request, its answer and its stream back to chat. The
translators here make it reachable from both kinds of client without a second mapping:
`ChatVia` for OpenAI clients, `MessagesVia` for Anthropic clients, composed with the
messages <-> chat translators (messages_to_chat.py). Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from gateway.protocol.sse import DONE, encode_event
from gateway.protocol.usage import Usage
from gateway.protocol.views import decode_any, encode
from gateway.providers.chat_to_messages import ChatToMessagesStream, anthropic_usage, chat_to_message, emit_events
from gateway.providers.messages_to_chat import messages_to_chat

if TYPE_CHECKING:
    from gateway.pipeline.context import Events
    from gateway.providers.upstream import Endpoint

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class ChatChunks(Protocol):
    """A provider's stream bytes in, OpenAI chat.completion.chunk objects out ({"error": ...} for an
    error mid-stream); the last chunk before `finish` returns is the usage chunk (choices: [])."""

    usage: Usage | None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


class ChatCore(Protocol):
    # True when the provider takes explicit cache points (Bedrock): MessagesVia then keeps the
    # client's cache_control markers on the chat request for `request` to place.
    cache_points: bool

    def endpoint(self, stream: bool) -> Endpoint: ...

    def request(self, chat: dict[str, Any], model: str) -> dict[str, Any]: ...

    def response(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]: ...

    def stream(self, model: str) -> ChatChunks: ...


# Accessors for the cores: a value of an unexpected type (from a client or a provider) reads as
# empty, so an odd shape is ignored, never a crash.
def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _functions(chat: dict[str, Any]) -> list[dict[str, Any]]:
    """The function declarations of a chat request's tools (other tool types have no equivalent)."""
    return [_d(t.get("function")) for t in _l(chat.get("tools")) if isinstance(t, dict) and t.get("type") == "function"]


def _is_usage_chunk(obj: dict[str, Any]) -> bool:
    return "usage" in obj and not obj.get("choices")


class _ChatSSE:
    def __init__(self, chunks: ChatChunks, include_usage: bool, keep: Events | None) -> None:
        self._chunks = chunks
        self._include_usage = include_usage
        self._keep = keep
        self.usage: Usage | None = None

    def _emit(self, objs: list[dict[str, Any]]) -> bytes:
        out = []
        for obj in objs:
            if not self._include_usage and _is_usage_chunk(obj):
                continue
            encoded = _enc.encode(obj)
            out.append(encode_event(encoded))
            if self._keep is not None and "error" not in obj:
                self._keep.append((None, encoded))
        return b"".join(out)

    def feed(self, chunk: bytes) -> bytes:
        return self._emit(self._chunks.feed(chunk))

    def finish(self) -> bytes:
        out = self._emit(self._chunks.finish())
        self.usage = self._chunks.usage
        return out + DONE


class _MessagesSSE:
    def __init__(self, chunks: ChatChunks, model: str, keep: Events | None) -> None:
        self._chunks = chunks
        self._translator = ChatToMessagesStream(model)
        self._keep = keep
        self.usage: Usage | None = None

    def _emit(self, objs: list[dict[str, Any]]) -> bytes:
        return b"".join(emit_events(self._translator.error(obj["error"]) if "error" in obj
                                    else self._translator.feed(obj), self._keep) for obj in objs)

    def feed(self, chunk: bytes) -> bytes:
        objs = self._chunks.feed(chunk)
        self._translator.native = self._chunks.usage  # set by the usage chunk among `objs`
        return self._emit(objs)

    def finish(self) -> bytes:
        out = self._emit(self._chunks.finish())
        self._translator.native = self._chunks.usage
        for name, data in self._translator.finish():
            encoded = _enc.encode(data)
            out += encode_event(encoded, name)
            if self._keep is not None:
                self._keep.append((name, encoded))
        self.usage = self._chunks.usage
        return out


class _Via:
    """A translator to a provider with its own wire, through its chat core."""

    translates = True

    def __init__(self, core: ChatCore) -> None:
        self.core = core

    def endpoint(self, client_endpoint: Endpoint, stream: bool = False) -> Endpoint:
        return self.core.endpoint(stream)


class ChatVia(_Via):
    """An OpenAI chat request to a provider with its own wire, and its answer back as chat."""

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes:
        # mark_cache: these providers cache prefixes on their own (implicit caching); nothing to mark.
        return encode(self.core.request(data if data is not None else decode_any(body), model))

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]:
        chat, usage = self.core.response(_dec.decode(body), model)
        return _enc.encode(chat), usage

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> _ChatSSE:
        return _ChatSSE(self.core.stream(model), include_usage, keep)


class MessagesVia(_Via):
    """An Anthropic messages request to a provider with its own wire: messages -> chat -> provider,
    and the answer back the same way."""

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes:
        chat = messages_to_chat(data if data is not None else decode_any(body), model,
                                cache_markers=self.core.cache_points)
        return encode(self.core.request(chat, model))

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]:
        chat, usage = self.core.response(_dec.decode(body), model)
        message = chat_to_message(chat, model)
        if usage is not None:
            message["usage"] = anthropic_usage(usage)
        return _enc.encode(message), usage

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> _MessagesSSE:
        return _MessagesSSE(self.core.stream(model), model, keep)
