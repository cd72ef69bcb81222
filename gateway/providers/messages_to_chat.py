"""Pure translators from Anthropic /v1/messages to the OpenAI chat wire format and back (no I/O inside).

Used when an Anthropic-SDK client (Claude Code, say) asks for a model whose deployment speaks only
OpenAI chat (vLLM, Ollama, any OpenAI model): the request goes out as a chat completion, the answer
(plain or streamed) comes back as an Anthropic message (count_tokens.py counts
/v1/messages/count_tokens locally). The answer's way back is chat_to_messages.py; the other
direction lives in translate.py, whose helpers are reused here; `MessagesToChat` at the end has the
same shape as its `Translator`s.

Choices where the two wires differ (each deliberate):
- tool_result blocks become `tool` messages placed before the rest of their user turn (OpenAI wants
  them right after the assistant's tool_calls); is_error results are prefixed "[tool error] ".
- thinking / redacted_thinking blocks, top_k, cache_control and server tools (no input_schema) have
  no chat equivalent and are dropped. With `cache_markers=True` (for a chat core whose provider
  takes cache points, Bedrock's) each block's `cache_control` rides along on its chat part, tool
  message, tool call or tool: an intermediate shape for that core only, never sent to an OpenAI server.
- OpenAI's "stop" means either end_turn or a stop sequence; it maps to end_turn.
- Reasoning models (o-series, gpt-5) take max_completion_tokens; others max_tokens.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.protocol.usage import Usage, parse_usage
from gateway.protocol.views import decode_any, encode
from gateway.providers.chat_to_messages import (
    FINISH_REASONS,
    ChatToMessagesSSE,
    ChatToMessagesStream,
    chat_to_message,
)
from gateway.providers.translate import _text_of

if TYPE_CHECKING:
    from gateway.pipeline.context import Events
    from gateway.providers.upstream import Endpoint

__all__ = ["FINISH_REASONS", "MESSAGES_TO_CHAT", "ChatToMessagesSSE", "ChatToMessagesStream", "MessagesToChat",
           "chat_to_message", "messages_to_chat"]  # the answer side lives in chat_to_messages.py

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

_REASONING_MODEL = re.compile(r"^(?:.*/)?(?:o\d|gpt-5)")


# ------------------------------------------------------------------------------------------ request


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}  # a client's odd value: an empty image, not a crash
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = source.get("url", "")
    return {"type": "image_url", "image_url": {"url": url}}


def _marked(out: dict[str, Any], block: dict[str, Any], keep: bool) -> dict[str, Any]:
    if keep and block.get("cache_control"):
        out["cache_control"] = block["cache_control"]
    return out


def _parts(content: Any, keep: bool = False) -> list[dict[str, Any]]:
    """Anthropic text/image blocks as OpenAI content parts (other block types are handled by the caller)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(_marked({"type": "text", "text": block.get("text", "")}, block, keep))
        elif block.get("type") == "image":
            parts.append(_marked(_image_part(block), block, keep))
    return parts


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # A plain string where it can be: some OpenAI-compatible servers' chat templates take no arrays.
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool_result(block: dict[str, Any], keep: bool = False) -> dict[str, Any]:
    text = _text_of(block.get("content"))
    if block.get("is_error"):
        text = "[tool error] " + text
    msg = {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
    inner = block.get("content")
    if keep and isinstance(inner, list):  # a marker on an inner block marks the whole result
        block = next((b for b in inner if isinstance(b, dict) and b.get("cache_control")), block)
    return _marked(msg, block, keep)


def _user(content: Any, out: list[dict[str, Any]], keep: bool = False) -> None:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
    out.extend(_tool_result(b, keep) for b in results)
    parts = _parts([b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_result")], keep)
    if parts or not results:
        out.append({"role": "user", "content": _content(parts)})


def _assistant(content: Any, out: list[dict[str, Any]], keep: bool = False) -> None:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    texts = [b for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    text = "".join(b.get("text", "") for b in texts)
    calls = [_marked({"id": b.get("id", ""), "type": "function",
                      "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}, b, keep)
             for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
    body: str | list[dict[str, Any]] | None = text if text or not calls else None
    if keep and any(b.get("cache_control") for b in texts):
        body = _parts(texts, keep)
    msg: dict[str, Any] = {"role": "assistant", "content": body}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    if kind in ("auto", "none"):
        return kind
    return None


def messages_to_chat(body: dict[str, Any], model: str, *, cache_markers: bool = False) -> dict[str, Any]:
    """An Anthropic /v1/messages request as an OpenAI chat.completions request for `model`
    (`cache_markers`: keep each block's cache_control, see the module's docstring)."""
    keep = cache_markers
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        if keep and isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system):
            messages.append({"role": "system", "content": _parts(system, keep)})
        else:
            messages.append({"role": "system", "content": _text_of(system) if not isinstance(system, str) else system})
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        if msg.get("role") == "assistant":
            _assistant(msg.get("content"), messages, keep)
        else:
            _user(msg.get("content"), messages, keep)
    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_completion_tokens" if _REASONING_MODEL.match(model.lower()) else "max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    if tools:
        out["tools"] = [_marked({"type": "function", "function": {
            "name": t.get("name", ""), "description": t.get("description", ""), "parameters": t["input_schema"]}},
            t, keep) for t in tools]
        choice = body.get("tool_choice")
        mapped = _tool_choice(choice)
        if mapped is not None:
            out["tool_choice"] = mapped
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = str(user)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # Anthropic streams always end with usage
    return out


# ----------------------------------------------------------------------------------------- response


# ------------------------------------------------------------------------------------- the translator


class MessagesToChat:
    """An Anthropic messages request to an OpenAI-chat-only deployment, and its answer back as a message."""

    translates = True

    def endpoint(self, client_endpoint: Endpoint, stream: bool = False) -> Endpoint:
        return "chat"

    def request(self, body: bytes, data: dict[str, Any] | None, model: str, client_model: str, *,
                changed: bool, mark_cache: bool) -> bytes:
        # mark_cache: OpenAI-compatible servers cache prefixes on their own; nothing to mark.
        return encode(messages_to_chat(data if data is not None else decode_any(body), model))

    def response(self, body: bytes, model: str) -> tuple[bytes, Usage | None]:
        data = _dec.decode(body)
        return _enc.encode(chat_to_message(data, model)), parse_usage(data.get("usage"))

    def stream(self, model: str, include_usage: bool, keep: Events | None) -> ChatToMessagesSSE:
        # include_usage: Anthropic streams always carry usage, so it is always asked for upstream.
        return ChatToMessagesSSE(model, 0, keep)


MESSAGES_TO_CHAT = MessagesToChat()
