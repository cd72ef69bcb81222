"""Google Gemini's native API (v1beta generateContent / streamGenerateContent?alt=sse) as OpenAI chat.

Pure wire mapping (no I/O); via_chat.py makes it reachable from OpenAI and Anthropic clients.

Choices where the wires differ (each deliberate):
- system and developer messages become `systemInstruction`; assistant turns are role "model";
  tool results are `functionResponse` parts of a user turn, named after the call they answer (the
  name comes from the assistant turn that made the call); a result that is a JSON object is sent
  as the response object, anything else as {"content": text}.
- tool schemas go as `parametersJsonSchema` and response_format's schema as `responseJsonSchema`
  (full JSON Schema, no conversion to the OpenAPI subset `parameters` takes).
- Gemini gives function calls no id unless it has one; the gateway names them
  "call_<responseId>_<n>" so a later turn's result finds its call. A call's `thoughtSignature`
  (Gemini 3 refuses a function-calling turn sent back without it) rides in the id, after "_ts_",
  URL-safe base64 so the id stays in [A-Za-z0-9_-] for Anthropic clients; it is put back on the
  functionCall part when the client returns the call.
- parts marked `thought` are the model's reasoning summary: not part of the answer; their tokens
  (thoughtsTokenCount) are billed as output, as Google bills them.
- finishReason STOP with a function call is "tool_calls"; MAX_TOKENS "length"; the safety family
  (SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY) and a blocked prompt
  "content_filter"; anything else "stop".
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.protocol.sse import SSEParser
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.translate import _text_of
from gateway.providers.via_chat import _d, _functions, _l, _s

if TYPE_CHECKING:
    from gateway.providers.upstream import Endpoint

_dec = msgspec.json.Decoder()

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_PARAMS = {"temperature": "temperature", "top_p": "topP", "seed": "seed",
           "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}


# ------------------------------------------------------------------------------------------ request


def _image_part(part: dict[str, Any]) -> dict[str, Any]:
    url = _s(_d(part.get("image_url")).get("url"))
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"inlineData": {"mimeType": media, "data": data}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and _s(part.get("text")):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            parts.append(_image_part(part))
    return parts


def _args(arguments: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except (json.JSONDecodeError, TypeError):
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


_SIGNATURE = "_ts_"


def _with_signature(call_id: str, signature: Any) -> str:
    if not isinstance(signature, str) or not signature:
        return call_id
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return call_id  # not base64: nothing the gateway can carry faithfully
    return call_id + _SIGNATURE + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signature_of(call_id: str) -> str | None:
    _, sep, tail = call_id.partition(_SIGNATURE)
    if not sep or not tail:
        return None
    try:
        raw = base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4))
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(raw).decode()


def _result(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {"content": text}
    return parsed if isinstance(parsed, dict) else {"content": text}


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    # Gemini wants user and model turns to alternate: merge neighbours of the same role.
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if isinstance(choice, dict):
        name = _s(_d(choice.get("function")).get("name"))
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def _generation_config(chat: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for key, name in _PARAMS.items():
        if chat.get(key) is not None:
            cfg[name] = chat[key]
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit:
        cfg["maxOutputTokens"] = limit
    stop = chat.get("stop")
    if stop:
        cfg["stopSequences"] = [stop] if isinstance(stop, str) else [s for s in _l(stop) if isinstance(s, str)]
    if isinstance(chat.get("n"), int) and chat["n"] > 1:
        cfg["candidateCount"] = chat["n"]
    fmt = _d(chat.get("response_format"))
    if fmt.get("type") == "json_object":
        cfg["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        cfg["responseMimeType"] = "application/json"
        schema = _d(fmt.get("json_schema")).get("schema")
        if schema:
            cfg["responseJsonSchema"] = schema
    effort = chat.get("reasoning_effort")
    if effort in ("low", "medium", "high"):
        cfg["thinkingConfig"] = {"thinkingBudget": {"low": 1024, "medium": 8192, "high": 24576}[effort]}
    return cfg


def chat_to_gemini(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completions request as a Gemini generateContent request (the model is in the URL)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, from the assistant turns
    for msg in _l(chat.get("messages")):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
        elif role == "assistant":
            parts = _parts(msg.get("content"))
            for call in _l(msg.get("tool_calls")):
                call, fn = _d(call), _d(_d(call).get("function"))
                names[_s(call.get("id"))] = _s(fn.get("name"))
                part: dict[str, Any] = {"functionCall": {"name": _s(fn.get("name")),
                                                         "args": _args(fn.get("arguments"))}}
                signature = _signature_of(_s(call.get("id")))
                if signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
            _append(contents, "model", parts)
        elif role == "tool":
            call_id = _s(msg.get("tool_call_id"))
            response = {"name": names.get(call_id, call_id), "response": _result(_text_of(msg.get("content")))}
            _append(contents, "user", [{"functionResponse": response}])
        else:
            _append(contents, "user", _parts(msg.get("content")))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = _functions(chat)
    if tools:
        decls = []
        for fn in tools:
            decl: dict[str, Any] = {"name": _s(fn.get("name")), "description": _s(fn.get("description"))}
            if isinstance(fn.get("parameters"), dict) and fn["parameters"]:
                decl["parametersJsonSchema"] = fn["parameters"]
            decls.append(decl)
        out["tools"] = [{"functionDeclarations": decls}]
        config = _tool_config(chat.get("tool_choice"))
        if config:
            out["toolConfig"] = config
    cfg = _generation_config(chat)
    if cfg:
        out["generationConfig"] = cfg
    return out


# ----------------------------------------------------------------------------------------- response


def usage_to_openai(meta: dict[str, Any] | None) -> dict[str, Any]:
    usage = parse_usage(meta) or Usage()
    thoughts = meta.get("thoughtsTokenCount") if isinstance(meta, dict) else 0
    return {"prompt_tokens": usage.prompt, "completion_tokens": usage.output,
            "total_tokens": usage.prompt + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read},
            "completion_tokens_details": {"reasoning_tokens": thoughts if isinstance(thoughts, int) else 0}}


def _finish(reason: Any, calls: bool) -> str | None:
    if not isinstance(reason, str) or not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if calls else "stop"


def _call_id(response_id: str, n: int) -> str:
    return f"call_{response_id}_{n}" if response_id else f"call_{n}"


def _index(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 128 else default


def _split(cand: dict[str, Any]) -> tuple[str, list[tuple[dict[str, Any], Any]]]:
    """A candidate's text, and its function calls each with its thoughtSignature (or None)."""
    text, calls = [], []
    for part in _l(_d(cand.get("content")).get("parts")):
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append((part["functionCall"], part.get("thoughtSignature")))
    return "".join(text), calls


def gemini_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse as an OpenAI chat.completion."""
    response_id = _s(resp.get("responseId"))
    choices = []
    for i, cand in enumerate(_l(resp.get("candidates"))):
        if not isinstance(cand, dict):
            continue
        text, calls = _split(cand)
        tool_calls = [{"id": _with_signature(_s(c.get("id")) or _call_id(response_id, n), sig), "type": "function",
                       "function": {"name": _s(c.get("name")), "arguments": json.dumps(_d(c.get("args")))}}
                      for n, (c, sig) in enumerate(calls)]
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices.append({"index": _index(cand.get("index"), i), "message": message,
                        "finish_reason": _finish(cand.get("finishReason"), bool(tool_calls)) or "stop",
                        "logprobs": None})
    if not choices:  # the prompt was blocked: no candidates, a promptFeedback.blockReason
        choices = [{"index": 0, "message": {"role": "assistant", "content": ""},
                    "finish_reason": "content_filter", "logprobs": None}]
    return {
        "id": "chatcmpl-" + (response_id or "gw"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_to_openai(resp.get("usageMetadata")),
    }


# ---------------------------------------------------------------------------------------- streaming


class GeminiChunks:
    """Gemini's SSE stream (each event a partial GenerateContentResponse) as chat chunks.

    Text parts are deltas; a functionCall part comes whole, so it is one tool_calls delta with its
    arguments; usageMetadata is cumulative, the last one counts. The finish chunk and the usage
    chunk are written when the stream ends (Gemini sends no [DONE]); a stream cut before any
    finishReason gets no finish chunk, so it is never taken for a whole answer.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self._parser = SSEParser()
        self._id = "chatcmpl-gw"
        self._created = int(time.time())
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self._finish: dict[int, str] = {}
        self._meta: dict[str, Any] | None = None
        self._failed = False

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _event(self, resp: dict[str, Any]) -> list[dict[str, Any]]:
        if "error" in resp:
            self._failed = True
            error = resp["error"]
            return [{"error": error if isinstance(error, dict) else {"message": str(error)}}]
        out: list[dict[str, Any]] = []
        if _s(resp.get("responseId")):
            self._id = "chatcmpl-" + resp["responseId"]
        if isinstance(resp.get("usageMetadata"), dict):
            self._meta = resp["usageMetadata"]
        candidates = _l(resp.get("candidates"))
        if not candidates and _d(resp.get("promptFeedback")).get("blockReason"):
            self._finish[0] = "content_filter"
        for i, cand in enumerate(candidates):
            if not isinstance(cand, dict):
                continue
            index = _index(cand.get("index"), i)
            if index not in self._started:
                self._started.add(index)
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
            text, calls = _split(cand)
            if text:
                out.append(self._chunk(index, {"content": text}))
            for call, sig in calls:
                n = self._calls.get(index, 0)
                self._calls[index] = n + 1
                call_id = _with_signature(_s(call.get("id")) or _call_id(self._id.removeprefix("chatcmpl-"), n), sig)
                delta = {"index": n, "id": call_id,
                         "type": "function", "function": {"name": _s(call.get("name")),
                                                          "arguments": json.dumps(_d(call.get("args")))}}
                out.append(self._chunk(index, {"tool_calls": [delta]}))
            reason = _finish(cand.get("finishReason"), bool(self._calls.get(index)))
            if reason:
                self._finish[index] = reason
        return out

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, data in self._parser.feed(chunk):
            try:
                obj = _dec.decode(data)
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict):
                out += self._event(obj)
        return out

    def finish(self) -> list[dict[str, Any]]:
        out = self.feed(b"\n\n") if self._parser.pending else []
        self.usage = parse_usage(self._meta)
        if self._failed:
            return out
        for index, reason in sorted(self._finish.items()):
            if index not in self._started:
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
            out.append(self._chunk(index, {}, reason))
        if self._finish:
            out.append({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                        "model": self.model, "choices": [], "usage": usage_to_openai(self._meta)})
        return out


class GeminiCore:
    """The Gemini wire for via_chat's translators."""

    cache_points = False  # Gemini caches implicitly (explicit caches are separate cachedContents objects)

    def endpoint(self, stream: bool) -> Endpoint:
        return "gemini_stream" if stream else "gemini_generate"

    def request(self, chat: dict[str, Any], model: str) -> dict[str, Any]:
        return chat_to_gemini(chat, model)

    def response(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]:
        return gemini_to_chat(body, model), parse_usage(body.get("usageMetadata"))

    def stream(self, model: str) -> GeminiChunks:
        return GeminiChunks(model)


GEMINI = GeminiCore()
