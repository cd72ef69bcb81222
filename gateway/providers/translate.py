"""Pure translators between the OpenAI chat wire format and Anthropic messages (no I/O inside).

Used when an OpenAI-SDK client asks for a model whose deployment speaks Anthropic: the request
goes out as an Anthropic message, the answer (plain or streamed) comes back as a chat completion.
The functions below are the wire mapping; at the end, one `Translator` object per kind of target
(the router picks it once per target) wraps them for the pipeline.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from gateway.protocol.sse import DONE, SSEParser, encode_event
from gateway.protocol.usage import Usage, parse_usage, usage_of_body
from gateway.protocol.views import decode_any, encode
from gateway.transform.promptcache import mark_system

if TYPE_CHECKING:
    from gateway.pipeline.context import Events
    from gateway.providers.upstream import Endpoint

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "")
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _tool_use_blocks(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": args})
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Anthropic wants user/assistant turns to alternate: merge neighbours of the same role.
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        out = None
    if parallel is False:
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def chat_to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completions request as an Anthropic /v1/messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for msg in body.get("messages") or []:
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
        elif role == "user":
            _append(messages, "user", _content_blocks(msg.get("content")))
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"))
            blocks.extend(_tool_use_blocks(msg.get("tool_calls") or []))
            _append(messages, "assistant", blocks)
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id", ""),
                      "content": _text_of(msg.get("content"))}
            _append(messages, "user", [result])
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in body["tools"]
            if t.get("type") == "function"
        ]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and body.get("tools"):
        out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    return out


def usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def anthropic_to_chat(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic message response as an OpenAI chat.completion."""
    text = []
    tool_calls = []
    for block in msg.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append({
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": json.dumps(block.get("input") or {})},
            })
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + str(msg.get("id", "")).removeprefix("msg_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": STOP_REASONS.get(msg.get("stop_reason") or "end_turn", "stop"),
            "logprobs": None,
        }],
        "usage": usage_to_openai(msg.get("usage") or {}),
    }


class AnthropicToChatStream:
    """Turns Anthropic stream events, one at a time, into OpenAI chat.completion.chunk objects."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = "chatcmpl-gw"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = "chatcmpl-" + str(msg.get("id", "gw")).removeprefix("msg_")
            self.usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self._tool_index.setdefault(int(data.get("index", 0)), len(self._tool_index))
                call = {"index": idx, "id": block.get("id", ""), "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                idx = self._tool_index.get(int(data.get("index", 0)), 0)
                call = {"index": idx, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self.usage.update(data.get("usage") or {})
            reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, STOP_REASONS.get(reason or "end_turn", "stop"))]
        if kind == "message_stop" and self.include_usage:
            return [{
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_to_openai(self.usage),
            }]
        return []


# ----------------------------------------------------------------------------- translators per target
#
# A `Translator` is chosen once per target by the router: what the client's request becomes on the
# provider's wire, and how the provider's answer (plain or streamed) comes back. Pure: no I/O.


class StreamTranslator(Protocol):
    """Turns a provider's SSE chunks into the client's, keeping the events the tap needs."""

    usage: Usage | None

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Translator(Protocol):
    translates: bool  # the provider speaks another protocol than the client

    def endpoint(self, client_endpoint: Endpoint, stream: bool) -> Endpoint: ...

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes: ...

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]: ...

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> StreamTranslator | None: ...


class Passthrough:
    """The provider speaks the client's protocol: the client's own bytes whenever nothing changed."""

    translates = False

    def endpoint(self, client_endpoint: Endpoint, stream: bool = False) -> Endpoint:
        return client_endpoint

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes:
        if model != client_model:
            out = dict(data if data is not None else decode_any(body))
            out["model"] = model
            return encode(out)
        if changed and data is not None:
            return encode(data)
        return body

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]:
        return body, usage_of_body(body)

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> StreamTranslator | None:
        return None  # chunks pass through as they are


class _AnthropicToChatSSE:
    def __init__(self, model: str, include_usage: bool, keep: Events | None) -> None:
        self._translator = AnthropicToChatStream(model, include_usage)
        self._parser = SSEParser()
        self._keep = keep
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for name, data in self._parser.feed(chunk):
            try:
                event = _dec.decode(data)
            except msgspec.DecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("type") == "error":
                out.append(encode_event(_enc.encode({"error": event.get("error")})))
                continue
            for obj in self._translator.feed(name, event):
                encoded = _enc.encode(obj)
                out.append(encode_event(encoded))
                if self._keep is not None:
                    self._keep.append((None, encoded))
        return b"".join(out)

    def finish(self) -> bytes:
        # The provider's own usage: a translated answer's OpenAI usage folds cache writes into prompt.
        self.usage = parse_usage(self._translator.usage)
        return DONE


class ChatToAnthropic:
    """An OpenAI chat request to an Anthropic-only deployment, and its answer back as chat."""

    translates = True

    def endpoint(self, client_endpoint: Endpoint, stream: bool = False) -> Endpoint:
        return "messages"

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes:
        out = chat_to_anthropic(data if data is not None else decode_any(body), model)
        if mark_cache:
            out = mark_system(out) or out
        return encode(out)

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]:
        data = _dec.decode(body)
        return _enc.encode(anthropic_to_chat(data, model)), parse_usage(data.get("usage"))

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> StreamTranslator:
        return _AnthropicToChatSSE(model, include_usage, keep)


PASSTHROUGH = Passthrough()
CHAT_TO_ANTHROPIC = ChatToAnthropic()
