"""Typed views of the request fields the gateway needs, decoded once by msgspec, and framing checks.

A view holds only what routing and the stages read, plus the *shape* of every field that later
code walks (messages, content parts, tools, tool calls, prompt, input): a body whose shape no
endpoint accepts is refused here with a 400, so no stage ever meets a `messages` that is a string
or a content part that is a number. Struct fields not listed are skipped by msgspec without being
built; every other field stays in the raw bytes, forwarded untouched when nothing changes.
Decoders are built once at import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from gateway.errors import BadRequest, MalformedBody, ModelRequired


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class Part(msgspec.Struct):
    """A content part (OpenAI) or block (Anthropic): only what the stages read is typed."""

    type: str | None = None
    text: str = ""  # never null: the stages join texts
    image_url: ImageURL | None = None  # translated to an Anthropic image block


class FunctionCall(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None  # OpenAI sends the arguments as a JSON string


class ToolCall(msgspec.Struct):
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class Message(msgspec.Struct):
    """A chat or Anthropic message; `content` is a string, a list of parts, or null (tool calls)."""

    role: str
    content: str | list[Part] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(msgspec.Struct):
    """An OpenAI tool ({"type": "function", "function": {...}}) or an Anthropic one ({"name": ...})."""

    type: str | None = None
    function: FunctionDef | None = None
    name: str | None = None


class ToolChoiceFunction(msgspec.Struct):
    name: str | None = None


class ToolChoice(msgspec.Struct):
    type: str | None = None
    function: ToolChoiceFunction | None = None
    name: str | None = None


class InputItem(msgspec.Struct):
    """A Responses API input item: a message (role + content) or another item kind."""

    type: str | None = None
    role: str | None = None
    content: str | list[Part] | None = None


class RequestView(msgspec.Struct):
    """Common to every JSON endpoint: chat, completions, embeddings, responses, messages."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[Tool] | None = None
    messages: list[Message] | None = None
    system: str | list[Part] | None = None
    tool_choice: str | ToolChoice | None = None
    stop: str | list[str] | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    # completions and embeddings: a string, strings, token ids or lists of token ids; responses: items
    prompt: str | list[str | int | list[int]] | None = None
    input: str | list[str | int | list[int] | InputItem] | None = None
    instructions: str | None = None


_view_decoder = msgspec.json.Decoder(RequestView)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def _check_tools(view: RequestView, endpoint: str | None) -> None:
    for i, tool in enumerate(view.tools or ()):
        if tool.function is not None or tool.name is not None:
            if tool.type == "function" and tool.function is None and endpoint == "chat":
                # chat nests the function ({"type": "function", "function": {...}}); responses doesn't
                raise MalformedBody(f"Invalid request: tools[{i}] of type function needs a `function` object",
                                    param=f"tools[{i}].function")
            continue
        if tool.type is None or tool.type == "function":
            raise MalformedBody(f"Invalid request: tools[{i}] needs a `function` or a `name`", param=f"tools[{i}]")


def decode_view(body: bytes, endpoint: str | None = None) -> RequestView:
    """The view of a request body, or a MalformedBody (400) naming the field whose shape is wrong.

    `endpoint` (chat, completions, embeddings, responses, messages) adds that endpoint's own rules;
    without it only the shapes no endpoint accepts are refused.
    """
    if not body:
        raise MalformedBody("The request body is empty; expected a JSON object.")
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        at = _AT.search(msg)
        if at is None:  # the top level itself is not an object
            raise MalformedBody("The request body must be a JSON object.") from None
        raise MalformedBody(f"Invalid request: {msg.replace('$.', '')}", param=at.group(1) or None) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("The request body is nested too deeply.") from None
    _check_tools(view, endpoint)
    return view


def require_model(view: RequestView) -> str:
    if not view.model:
        raise ModelRequired("You must provide a model parameter.", param="model")
    return view.model


def decode_any(body: bytes) -> dict[str, Any]:
    try:
        data = _any_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("The request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise MalformedBody("The request body must be a JSON object.")
    return data


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


class AmbiguousFraming(BadRequest):
    code = "ambiguous_framing"


def framing_error(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> BadRequest | None:
    """A 400 for a request whose body length is ambiguous (RFC 9112 section 6.3), else None.

    Refused: Content-Length together with Transfer-Encoding (the request-smuggling shape),
    a Transfer-Encoding whose last coding is not `chunked`, and several or malformed
    Content-Length values. Pass every header pair (duplicates included) when the server gives them.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lengths: list[str] = []
    codings: list[str] = []
    for name, value in pairs:
        key = name.lower()
        if key == "content-length":
            lengths.extend(v.strip() for v in value.split(","))
        elif key == "transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(",") if v.strip())
    if lengths and codings:
        return AmbiguousFraming("The request has both Content-Length and Transfer-Encoding; send one of them.")
    if codings and codings[-1] != "chunked":
        return AmbiguousFraming("Transfer-Encoding must end with chunked.")
    if lengths and (len(set(lengths)) > 1 or not lengths[0].isdigit() or not lengths[0].isascii()):
        return AmbiguousFraming("The Content-Length header is malformed or given with different values.")
    return None
