"""Typed views of the request fields the gateway needs, decoded once by msgspec.

A view holds only what routing and the stages read; every other field stays in the raw bytes,
which are forwarded untouched when nothing changes. Decoders are built once at import.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import MalformedBody, ModelRequired


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class RequestView(msgspec.Struct):
    """Common to every JSON endpoint: chat, completions, embeddings, responses, messages."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Raw: located but not decoded; empty when absent.
    tools: msgspec.Raw = msgspec.Raw()
    messages: msgspec.Raw = msgspec.Raw()
    system: msgspec.Raw = msgspec.Raw()


_view_decoder = msgspec.json.Decoder(RequestView)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

def decode_view(body: bytes) -> RequestView:
    if not body:
        raise MalformedBody("The request body is empty; expected a JSON object.")
    try:
        view = _view_decoder.decode(body)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if "Expected `object`" in msg and "at `$`" not in msg and "$." not in msg:
            raise MalformedBody("The request body must be a JSON object.") from None
        raise MalformedBody(f"Invalid request: {msg.replace('$.', '')}") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("The request body is nested too deeply.") from None
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
