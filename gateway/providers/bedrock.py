"""AWS Bedrock's Converse API (POST /model/{modelId}/converse, /converse-stream) as OpenAI chat.

Pure wire mapping (no I/O); via_chat.py makes it reachable from OpenAI and Anthropic clients, the
signing is sigv4.py's, the stream's binary framing protocol/eventstream.py's.

Choices where the wires differ (each deliberate):
- system and developer messages become `system` blocks; tool results are `toolResult` blocks of
  a user turn (a result that parses as a JSON object goes as a `json` block, else `text`); the
  "[tool error] " prefix messages_to_chat.py writes for an is_error result becomes status "error".
- images must travel as bytes: a data: URL becomes an `image` block; an http(s) URL is refused
  with a 400 (Bedrock cannot fetch it, and the gateway does not fetch on a client's behalf).
- tool_choice "none" has no Converse equivalent: the tools stay declared (Bedrock requires them
  when the history holds tool use) and the choice is left to the model.
- stop reasons: end_turn and stop_sequence -> "stop", tool_use -> "tool_calls", max_tokens and
  model_context_window_exceeded -> "length", guardrail_intervened and content_filtered ->
  "content_filter".
- prompt caching: a `cache_control` marker (Anthropic's, kept by messages_to_chat for this core,
  or on an OpenAI client's content part, message or tool as LiteLLM accepts it) becomes a
  `{"cachePoint": {"type": "default"}}` block right after the marked block: in `system`, in a
  message's content, or after the tool in `toolConfig.tools`. A marker's "ttl" is not carried
  (Bedrock's cache points are 5-minute). Requests without markers are unchanged. Only for models
  that cache (`caches_prompts`: Claude from 3.5 Sonnet v2 / 3.5 Haiku on, Amazon Nova, tools on
  Claude only): Bedrock refuses a request with a cache point for any other model ("You invoked an
  unsupported model or your request did not allow prompt caching"), and the gateway marks long
  conversations itself, so markers for those models are dropped as on an OpenAI deployment.
- usage: inputTokens excludes cache reads and writes (cacheReadInputTokens,
  cacheWriteInputTokens), as Anthropic's input_tokens does.
- a stream's exception message (throttlingException, modelStreamErrorException, ...) ends the
  stream as an error chunk, like a provider error mid-stream elsewhere.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import BadRequest
from gateway.protocol.eventstream import Decoder, EventStreamError
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.translate import _text_of
from gateway.providers.via_chat import _d, _l, _s

if TYPE_CHECKING:
    from gateway.providers.upstream import Endpoint

_dec = msgspec.json.Decoder()

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length",
                "model_context_window_exceeded": "length", "guardrail_intervened": "content_filter",
                "content_filtered": "content_filter"}
_TOOL_ERROR = "[tool error] "
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


# ------------------------------------------------------------------------------------------ request


def _image(part: dict[str, Any]) -> dict[str, Any]:
    url = _s(_d(part.get("image_url")).get("url"))
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        fmt = _FORMATS.get(media.lower())
        if fmt is not None:
            return {"image": {"format": fmt, "source": {"bytes": data}}}
        raise BadRequest(f"Bedrock takes png, jpeg, gif or webp images, not {media!r}.", param="messages")
    raise BadRequest("Bedrock takes images as bytes only: send the image as a data: URL (base64).",
                     param="messages")


CACHE_POINT = {"cachePoint": {"type": "default"}}
# Bedrock's Claude models before prompt caching (AWS's "supported models" list for prompt caching).
_CLAUDE_UNCACHED = re.compile(r"claude-(?:v2|instant|3-(?:opus|sonnet|haiku)-|3-5-sonnet-20240620)")
_REGION_PREFIX = re.compile(r"^(?:[a-z]{2,6}(?:-[a-z]+)?)\.(?=anthropic\.|amazon\.)")  # us., eu., apac., global.


def caches_prompts(model: str) -> tuple[bool, bool]:
    """(takes cache points at all, takes one after the tools) for a Bedrock model id, inference
    profile id or ARN. Unknown ids (an application inference profile ARN) get none: a cache point
    the model does not take fails the whole request, a missing one only costs the cache."""
    base = _REGION_PREFIX.sub("", model.rpartition("/")[2].lower())
    if base.startswith("anthropic.claude-"):
        ok = _CLAUDE_UNCACHED.match(base.removeprefix("anthropic.")) is None
        return ok, ok
    if base.startswith("amazon.nova-") and not any(k in base for k in ("sonic", "canvas", "reel")):
        return True, False  # Nova: system and messages only
    return False, False


def _cache_point(blocks: list[dict[str, Any]], marked: Any) -> None:
    # Only after a block: a cache point opening a message or list would mark nothing.
    if marked and blocks and "cachePoint" not in blocks[-1]:
        blocks.append(dict(CACHE_POINT))


def _no_cache_points(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in blocks if "cachePoint" not in b]


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in _l(content):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and _s(part.get("text")):
            blocks.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            blocks.append(_image(part))
        else:
            continue
        _cache_point(blocks, part.get("cache_control"))
    return blocks


def _system(content: Any) -> list[dict[str, Any]]:
    parts = _l(content)
    if not any(isinstance(p, dict) and p.get("cache_control") for p in parts):
        text = _text_of(content)
        return [{"text": text}] if text else []
    blocks: list[dict[str, Any]] = []  # split where the markers are, so each cache point keeps its place
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "text" and _s(part.get("text")):
            blocks.append({"text": part["text"]})
            _cache_point(blocks, part.get("cache_control"))
    return blocks


def _input(arguments: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except (json.JSONDecodeError, TypeError):
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    text = _text_of(msg.get("content"))
    status = "success"
    if text.startswith(_TOOL_ERROR):
        text, status = text[len(_TOOL_ERROR):], "error"
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    content = [{"json": parsed}] if isinstance(parsed, dict) else [{"text": text}]
    return {"toolResult": {"toolUseId": _s(msg.get("tool_call_id")), "content": content, "status": status}}


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Converse wants user and assistant turns to alternate: merge neighbours of the same role.
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict):
        return {"tool": {"name": _s(_d(choice.get("function")).get("name"))}}
    return None  # "none" and unset: the model decides


def chat_to_converse(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completions request as a Converse request (the model id is in the URL)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for msg in _l(chat.get("messages")):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        mark = msg.get("cache_control")  # a marker on the whole message: after its last block
        if role in ("system", "developer"):
            blocks = _system(msg.get("content"))
            _cache_point(blocks, mark)
            system.extend(blocks)
        elif role == "assistant":
            blocks = _blocks(msg.get("content"))
            for call in _l(msg.get("tool_calls")):
                call, fn = _d(call), _d(_d(call).get("function"))
                blocks.append({"toolUse": {"toolUseId": _s(call.get("id")), "name": _s(fn.get("name")),
                                           "input": _input(fn.get("arguments"))}})
                _cache_point(blocks, call.get("cache_control"))
            _cache_point(blocks, mark)
            _append(messages, "assistant", blocks)
        elif role == "tool":
            blocks = [_tool_result(msg)]
            _cache_point(blocks, mark)
            _append(messages, "user", blocks)
        else:
            blocks = _blocks(msg.get("content"))
            _cache_point(blocks, mark)
            _append(messages, "user", blocks)
    caches, caches_tools = caches_prompts(model)
    if not caches:
        system = _no_cache_points(system)
        for m in messages:
            m["content"] = _no_cache_points(m["content"])
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    inference: dict[str, Any] = {}
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit:
        inference["maxTokens"] = limit
    if chat.get("temperature") is not None:
        inference["temperature"] = chat["temperature"]
    if chat.get("top_p") is not None:
        inference["topP"] = chat["top_p"]
    stop = chat.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else [x for x in _l(stop) if isinstance(x, str)]
    if inference:
        out["inferenceConfig"] = inference
    specs: list[dict[str, Any]] = []
    for tool in _l(chat.get("tools")):
        if not (isinstance(tool, dict) and tool.get("type") == "function"):
            continue  # other tool types have no equivalent
        fn = _d(tool.get("function"))
        specs.append({"toolSpec": {
            "name": _s(fn.get("name")), "description": _s(fn.get("description")) or _s(fn.get("name")),
            "inputSchema": {"json": _d(fn.get("parameters")) or {"type": "object", "properties": {}}}}})
        _cache_point(specs, tool.get("cache_control"))
    if not caches_tools:
        specs = _no_cache_points(specs)
    if specs:
        config: dict[str, Any] = {"tools": specs}
        choice = _tool_choice(chat.get("tool_choice"))
        if choice:
            config["toolChoice"] = choice
        out["toolConfig"] = config
    return out


# ----------------------------------------------------------------------------------------- response


def usage_to_openai(usage: dict[str, Any] | None) -> dict[str, Any]:
    parsed = parse_usage(usage) or Usage()
    return {"prompt_tokens": parsed.prompt, "completion_tokens": parsed.output,
            "total_tokens": parsed.prompt + parsed.output,
            "prompt_tokens_details": {"cached_tokens": parsed.cache_read}}


def converse_to_chat(resp: dict[str, Any], model: str, request_id: str = "") -> dict[str, Any]:
    """A Converse response as an OpenAI chat.completion."""
    content = _l(_d(_d(resp.get("output")).get("message")).get("content"))
    text, calls = [], []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": _s(use.get("toolUseId")), "type": "function",
                          "function": {"name": _s(use.get("name")), "arguments": json.dumps(_d(use.get("input")))}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + (request_id or "bedrock"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": STOP_REASONS.get(_s(resp.get("stopReason")) or "end_turn", "stop"),
                     "logprobs": None}],
        "usage": usage_to_openai(resp.get("usage")),
    }


# ---------------------------------------------------------------------------------------- streaming


class ConverseChunks:
    """converse-stream's event-stream messages as chat chunks: messageStart, contentBlockStart
    (a tool use's id and name), contentBlockDelta (text, or a tool use's partial JSON input),
    messageStop (the stop reason: the finish chunk), metadata (usage: the usage chunk). A frame
    whose CRC or length is wrong ends the stream as an error: nothing after it can be trusted."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self._decoder = Decoder()
        self._id = "chatcmpl-bedrock"
        self._created = int(time.time())
        self._started = False
        self._tools: dict[int, int] = {}  # contentBlockIndex -> tool_calls index
        self._done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _event(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "messageStart":
            return self._start()
        out = self._start()
        block = data.get("contentBlockIndex")
        block = block if isinstance(block, int) and not isinstance(block, bool) else 0
        if kind == "contentBlockStart":
            use = _d(data.get("start")).get("toolUse")
            if isinstance(use, dict):
                index = self._tools.setdefault(block, len(self._tools))
                out.append(self._chunk({"tool_calls": [{"index": index, "id": _s(use.get("toolUseId")),
                                                        "type": "function",
                                                        "function": {"name": _s(use.get("name")), "arguments": ""}}]}))
        elif kind == "contentBlockDelta":
            delta = _d(data.get("delta"))
            if _s(delta.get("text")):
                out.append(self._chunk({"content": delta["text"]}))
            elif isinstance(delta.get("toolUse"), dict):
                index = self._tools.setdefault(block, len(self._tools))
                partial = _s(delta["toolUse"].get("input"))
                out.append(self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]}))
        elif kind == "messageStop":
            out.append(self._chunk({}, STOP_REASONS.get(_s(data.get("stopReason")) or "end_turn", "stop")))
        elif kind == "metadata" and isinstance(data.get("usage"), dict):
            self.usage = parse_usage(data["usage"])
            out.append({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                        "model": self.model, "choices": [], "usage": usage_to_openai(data["usage"])})
        return out

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self._done:
            return []
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as exc:
            self._done = True
            return [{"error": {"message": f"Bedrock stream framing: {exc}", "type": "api_error"}}]
        out: list[dict[str, Any]] = []
        for msg in messages:
            try:
                data = _dec.decode(msg.payload) if msg.payload else {}
            except msgspec.DecodeError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            if msg.message_type != "event":  # an exception (or error) message ends the stream
                self._done = True
                message = _s(data.get("message")) or str(msg.headers.get(":error-message") or "Bedrock stream error")
                out.append({"error": {"message": message, "type": msg.event_type or "api_error"}})
                break
            out += self._event(msg.event_type, data)
        return out

    def finish(self) -> list[dict[str, Any]]:
        if self._decoder.pending and not self._done:
            self._done = True
            return [{"error": {"message": "Bedrock stream ended inside a message", "type": "api_error"}}]
        return []


class BedrockCore:
    """The Converse wire for via_chat's translators."""

    cache_points = True

    def endpoint(self, stream: bool) -> Endpoint:
        return "converse_stream" if stream else "converse"

    def request(self, chat: dict[str, Any], model: str) -> dict[str, Any]:
        return chat_to_converse(chat, model)

    def response(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]:
        return converse_to_chat(body, model), parse_usage(body.get("usage"))

    def stream(self, model: str) -> ConverseChunks:
        return ConverseChunks(model)


BEDROCK = BedrockCore()
