"""Hostile request bodies: every shape no endpoint accepts is a 400 in the caller's shape, never a 500.

The table covers the kinds of the issue's hostile run (and more); the VALID table holds real SDK
request shapes of every endpoint, which must keep passing. `framing_error` refuses ambiguous
body framing; `render` never raises, whatever the provider sent.
"""

from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.protocol.views import RequestView, decode_view, framing_error, require_model

M = '"model": "gpt-4o"'
U = '{"role": "user", "content": "hi"}'

# (kind, body, the param the 400 names or None); every one must fail decode_view or require_model
HOSTILE: list[tuple[str, bytes, str | None]] = [
    (kind, body.encode() if isinstance(body, str) else body, param)
    for kind, body, param in [
        ("empty body", "", None),
        ("not json", "hello", None),
        ("truncated json", '{"model": "gpt-4o", "messages": [', None),
        ("trailing garbage", f'{{{M}, "messages": [{U}]}} xx', None),
        ("invalid utf-8", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
        ("array body", "[1, 2, 3]", None),
        ("string body", '"just a string"', None),
        ("number body", "42", None),
        ("null body", "null", None),
        ("true body", "true", None),
        ("nested too deeply", f'{{{M}, "messages": ' + "[" * 20000 + "]" * 20000 + "}", None),
        ("deep object in a message", f'{{{M}, "messages": [{{"role": "user", "x": ' + '{"a": ' * 20000 + "1"
         + "}" * 20000 + "}]}", None),
        ("model a number", '{"model": 42, "messages": []}', "model"),
        ("model a list", '{"model": ["a"], "messages": []}', "model"),
        ("model an object", '{"model": {"name": "x"}}', "model"),
        ("model empty", '{"model": "", "messages": []}', "model"),
        ("model null", '{"model": null, "messages": []}', "model"),
        ("model missing", f'{{"messages": [{U}]}}', "model"),
        ("stream a string", f'{{{M}, "stream": "yes"}}', "stream"),
        ("stream a number", f'{{{M}, "stream": 1}}', "stream"),
        ("stream_options a string", f'{{{M}, "stream": true, "stream_options": "x"}}', "stream_options"),
        ("include_usage a number", f'{{{M}, "stream_options": {{"include_usage": 3}}}}',
         "stream_options.include_usage"),
        ("temperature a string", f'{{{M}, "temperature": "hot"}}', "temperature"),
        ("n a float", f'{{{M}, "n": 1.5}}', "n"),
        ("n huge", f'{{{M}, "n": 1e30}}', "n"),
        ("max_tokens a string", f'{{{M}, "max_tokens": "10"}}', "max_tokens"),
        ("messages a string", f'{{{M}, "messages": "hi"}}', "messages"),
        ("messages a number", f'{{{M}, "messages": 5}}', "messages"),
        ("messages an object", f'{{{M}, "messages": {{"role": "user"}}}}', "messages"),
        ("message a string", f'{{{M}, "messages": ["hi"]}}', "messages[0]"),
        ("message a number", f'{{{M}, "messages": [{U}, 1]}}', "messages[1]"),
        ("message null", f'{{{M}, "messages": [null]}}', "messages[0]"),
        ("message a list", f'{{{M}, "messages": [[{U}]]}}', "messages[0]"),
        ("role missing", f'{{{M}, "messages": [{{"content": "x"}}]}}', "messages[0]"),
        ("role a number", f'{{{M}, "messages": [{{"role": 1, "content": "x"}}]}}', "messages[0].role"),
        ("content a number", f'{{{M}, "messages": [{{"role": "user", "content": 5}}]}}', "messages[0].content"),
        ("content an object", f'{{{M}, "messages": [{{"role": "user", "content": {{"a": 1}}}}]}}',
         "messages[0].content"),
        ("content part a string", f'{{{M}, "messages": [{{"role": "user", "content": ["x"]}}]}}',
         "messages[0].content[0]"),
        ("content part a number", f'{{{M}, "messages": [{{"role": "user", "content": [1]}}]}}',
         "messages[0].content[0]"),
        ("part text a number", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": "text", "text": 5}}]}}]}}',
         "messages[0].content[0].text"),
        ("part text null", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": "text", "text": null}}]}}]}}',
         "messages[0].content[0].text"),
        ("system block text null", f'{{{M}, "system": [{{"type": "text", "text": null}}]}}', "system[0].text"),
        ("image_url a string", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": "image_url", '
         '"image_url": "http://x/y.png"}]}]}', "messages[0].content[0].image_url"),
        ("image url a number", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": "image_url", '
         '"image_url": {"url": 5}}]}]}', "messages[0].content[0].image_url.url"),
        ("part type a number", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": 1}}]}}]}}',
         "messages[0].content[0].type"),
        ("tool_calls an object", f'{{{M}, "messages": [{{"role": "assistant", "tool_calls": {{"id": "a"}}}}]}}',
         "messages[0].tool_calls"),
        ("tool call arguments an object", f'{{{M}, "messages": [{{"role": "assistant", "tool_calls": [{{"id": "a", '
         '"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}]}',
         "messages[0].tool_calls[0].function.arguments"),
        ("tool call function a string",
         f'{{{M}, "messages": [{{"role": "assistant", "tool_calls": [{{"function": "f"}}]}}]}}',
         "messages[0].tool_calls[0].function"),
        ("tool_call_id a number", f'{{{M}, "messages": [{{"role": "tool", "tool_call_id": 7, "content": "r"}}]}}',
         "messages[0].tool_call_id"),
        ("system a number", f'{{{M}, "system": 5, "messages": [{U}]}}', "system"),
        ("system an object", f'{{{M}, "system": {{"a": 1}}}}', "system"),
        ("system blocks of strings", f'{{{M}, "system": ["a"]}}', "system[0]"),
        ("tools a string", f'{{{M}, "tools": "x"}}', "tools"),
        ("tools an object", f'{{{M}, "tools": {{"a": 1}}}}', "tools"),
        ("tool a string", f'{{{M}, "tools": ["x"]}}', "tools[0]"),
        ("tool without function or name", f'{{{M}, "tools": [{{"type": "function"}}]}}', "tools[0]"),
        ("tool of no kind", f'{{{M}, "tools": [{{"description": "d"}}]}}', "tools[0]"),
        ("tool function without name", f'{{{M}, "tools": [{{"type": "function", "function": {{}}}}]}}',
         "tools[0].function"),
        ("tool function name a number", f'{{{M}, "tools": [{{"type": "function", "function": {{"name": 3}}}}]}}',
         "tools[0].function.name"),
        ("tool_choice a number", f'{{{M}, "tool_choice": 5}}', "tool_choice"),
        ("tool_choice function a string", f'{{{M}, "tool_choice": {{"type": "function", "function": "f"}}}}',
         "tool_choice.function"),
        ("stop a number", f'{{{M}, "stop": 5}}', "stop"),
        ("stop list of numbers", f'{{{M}, "stop": [1, 2]}}', "stop[0]"),
        ("parallel_tool_calls a string", f'{{{M}, "parallel_tool_calls": "no"}}', "parallel_tool_calls"),
        ("prompt a number", f'{{{M}, "prompt": 5}}', "prompt"),
        ("prompt an object", f'{{{M}, "prompt": {{"a": 1}}}}', "prompt"),
        ("prompt list of objects", f'{{{M}, "prompt": [{{"a": 1}}]}}', "prompt[0]"),
        ("prompt token list of floats", f'{{{M}, "prompt": [[1.5]]}}', "prompt[0][0]"),
        ("input a number", f'{{{M}, "input": 5}}', "input"),
        ("input an object", f'{{{M}, "input": {{"a": 1}}}}', "input"),
        ("input item content a number", f'{{{M}, "input": [{{"role": "user", "content": 5}}]}}', "input[0].content"),
        ("input null item", f'{{{M}, "input": [null]}}', "input[0]"),
        ("instructions a number", f'{{{M}, "instructions": 5, "input": "x"}}', "instructions"),
    ]
]


def _refusal(body: bytes) -> errors.GatewayError:
    with pytest.raises(errors.BadRequest) as exc:
        require_model(decode_view(body, "chat"))
    return exc.value


def test_the_table_is_wide() -> None:
    assert len(HOSTILE) >= 60 and len({kind for kind, _, _ in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize(("kind", "body", "param"), HOSTILE, ids=[k for k, _, _ in HOSTILE])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_hostile_body_is_a_400_in_the_callers_shape(
    kind: str, body: bytes, param: str | None, protocol: errors.Protocol
) -> None:
    err = _refusal(body)
    if param is not None:
        assert err.param == param, err.message
    status, rendered = errors.render(err, protocol)
    assert status == 400
    data = json.loads(rendered)
    if protocol == "openai":
        assert set(data) == {"error"}
        assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"] == err.message
        assert data["error"]["param"] == err.param
    else:
        assert data == {"type": "error", "error": {"type": "invalid_request_error", "message": err.message}}


def test_messages_of_the_wrong_type_says_where() -> None:
    err = _refusal(b'{"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": 5}]}')
    assert "messages[1].content" in err.message and "$" not in err.message


def test_a_chat_function_tool_must_nest_its_function() -> None:
    flat = b'{"model": "m", "tools": [{"type": "function", "name": "f", "parameters": {}}]}'
    decode_view(flat, "responses")  # the Responses API's flat function tool
    with pytest.raises(errors.MalformedBody) as exc:
        decode_view(flat, "chat")  # chat -> Anthropic translation reads tools[i].function.name
    assert exc.value.param == "tools[0].function"


VALID: list[tuple[str, str]] = [
    ("chat plain", f'{{{M}, "messages": [{{"role": "system", "content": "be brief"}}, {U}]}}'),
    ("chat stream with usage",
     f'{{{M}, "stream": true, "stream_options": {{"include_usage": true}}, "messages": [{U}]}}'),
    ("chat parts and image", f'{{{M}, "messages": [{{"role": "user", "content": [{{"type": "text", "text": "what?"}},'
     ' {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]}]}'),
    ("chat tools round trip", f'{{{M}, "tools": [{{"type": "function", "function": {{"name": "get", "description": "d",'
     ' "parameters": {"type": "object", "properties": {}}}}], "tool_choice": {"type": "function", "function":'
     ' {"name": "get"}}, "parallel_tool_calls": false, "messages": [' + U + ', {"role": "assistant", "content": null,'
     ' "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},'
     ' {"role": "tool", "tool_call_id": "c1", "content": "42"}]}'),
    ("chat tool_choice string", f'{{{M}, "tool_choice": "required", "tools": [{{"type": "function", "function": '
     '{"name": "f"}}], "messages": [' + U + "]}"),
    ("chat stop list and extras", f'{{{M}, "stop": ["\\n", "END"], "top_p": 0.9, "temperature": 0, "n": 1, "seed": 7,'
     ' "max_completion_tokens": 100, "response_format": {"type": "json_object"}, "user": "u1",'
     ' "logit_bias": {"50256": -100}, "metadata": {"a": "b"}, "messages": [' + U + "]}"),
    ("chat refusal and audio parts", f'{{{M}, "messages": [{{"role": "assistant", "content": [{{"type": "refusal", '
     '"refusal": "no"}]}, {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", '
     '"format": "wav"}}]}]}'),
    ("chat named message", f'{{{M}, "messages": [{{"role": "user", "name": "alice", "content": "hi"}}]}}'),
    ("anthropic plain", '{"model": "claude", "max_tokens": 64, "system": "be brief", "messages": [' + U + "]}"),
    ("anthropic blocks", '{"model": "claude", "max_tokens": 64, "system": [{"type": "text", "text": "s", '
     '"cache_control": {"type": "ephemeral"}}], "messages": [{"role": "user", "content": [{"type": "text", '
     '"text": "look"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}, '
     '{"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": '
     '"tool_use", "id": "t1", "name": "get", "input": {"q": 1}}]}, {"role": "user", "content": [{"type": '
     '"tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]}]}]}'),
    ("anthropic tools", '{"model": "claude", "max_tokens": 64, "tools": [{"name": "get", "description": "d", '
     '"input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}], "tool_choice": '
     '{"type": "tool", "name": "get"}, "stop_sequences": ["x"], "messages": [' + U + "]}"),
    ("completions string", f'{{{M}, "prompt": "Say hi", "max_tokens": 5}}'),
    ("completions list", f'{{{M}, "prompt": ["a", "b"]}}'),
    ("completions tokens", f'{{{M}, "prompt": [1, 2, 3]}}'),
    ("completions token lists", f'{{{M}, "prompt": [[1, 2], [3]]}}'),
    ("embeddings string", '{"model": "text-embedding-3-small", "input": "hello", "encoding_format": "float"}'),
    ("embeddings list", '{"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256}'),
    ("embeddings tokens", '{"model": "text-embedding-3-small", "input": [[1, 2], [3, 4]]}'),
    ("responses string", f'{{{M}, "input": "hi", "instructions": "be brief", "stream": true}}'),
    ("responses items", f'{{{M}, "input": [{{"role": "user", "content": [{{"type": "input_text", "text": "hi"}}]}}, '
     '{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}, {"type": "function_call_output", '
     '"call_id": "c", "output": "42"}, {"type": "reasoning", "id": "r", "summary": []}], "tools": [{"type": '
     '"function", "name": "f", "parameters": {}}, {"type": "web_search_preview"}], "tool_choice": {"type": '
     '"function", "name": "f"}, "text": {"format": {"type": "text"}}}'),
]


@pytest.mark.parametrize(("kind", "body"), VALID, ids=[k for k, _ in VALID])
def test_real_sdk_shapes_pass(kind: str, body: str) -> None:
    endpoint = "responses" if kind.startswith("responses") else "messages" if kind.startswith("anthropic") else "chat"
    view = decode_view(body.encode(), endpoint)
    assert isinstance(view, RequestView) and require_model(view)


def test_view_keeps_what_the_stages_read() -> None:
    view = decode_view(b'{"model": "gpt", "stream": true, "temperature": 0, "n": 2, "max_tokens": 9, '
                       b'"messages": [{"role": "user", "content": "hi"}], "vendor": {"x": 1}}')
    assert (view.model, view.stream, view.temperature, view.n, view.max_tokens) == ("gpt", True, 0, 2, 9)
    assert view.messages is not None and view.messages[0].role == "user" and view.messages[0].content == "hi"


# -- framing ---------------------------------------------------------------------------------------

FRAMING: list[tuple[str, list[tuple[str, str]], bool]] = [
    ("content-length only", [("content-length", "12")], False),
    ("chunked only", [("transfer-encoding", "chunked")], False),
    ("neither", [("host", "x")], False),
    ("both", [("content-length", "12"), ("transfer-encoding", "chunked")], True),
    ("both, mixed case", [("Content-Length", "0"), ("Transfer-Encoding", "Chunked")], True),
    ("gzip then chunked", [("transfer-encoding", "gzip, chunked")], False),
    ("chunked not last", [("transfer-encoding", "chunked, gzip")], True),
    ("unknown coding", [("transfer-encoding", "identity")], True),
    ("two equal lengths", [("content-length", "5"), ("content-length", "5")], False),
    ("two different lengths", [("content-length", "5"), ("content-length", "6")], True),
    ("list of lengths", [("content-length", "5, 6")], True),
    ("negative length", [("content-length", "-1")], True),
    ("length not a number", [("content-length", "ten")], True),
    ("unicode digits", [("content-length", "\u0661\u0662")], True),
]


@pytest.mark.parametrize(("kind", "headers", "refused"), FRAMING, ids=[k for k, _, _ in FRAMING])
def test_framing(kind: str, headers: list[tuple[str, str]], refused: bool) -> None:
    err = framing_error(headers)
    assert (err is not None) is refused
    if err is not None:
        status, body = errors.render(err, "openai")
        assert status == 400 and json.loads(body)["error"]["code"] == "ambiguous_framing"


def test_framing_takes_a_dict_too() -> None:
    assert framing_error({"content-length": "3", "transfer-encoding": "chunked"}) is not None
    assert framing_error({"content-length": "3"}) is None


# -- render never raises -------------------------------------------------------------------------

UPSTREAM_BODIES = [
    b"",
    b"\xff\xfe not utf-8",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b'{"error": 5}',
    b'{"error": {"message": 5}}',
    b'{"error": ' + b"[" * 50000 + b"]" * 50000 + b"}",
    b'{"message": "plain"}',
    b"<html>502 Bad Gateway</html>",
]


@pytest.mark.parametrize("body", UPSTREAM_BODIES)
@pytest.mark.parametrize(("source", "caller"), [("openai", "anthropic"), ("anthropic", "openai")])
def test_render_of_any_upstream_body_is_json(body: bytes, source: errors.Protocol, caller: errors.Protocol) -> None:
    status, rendered = errors.render(errors.UpstreamStatus(502, body, protocol=source), caller)
    assert status == 502
    data = json.loads(rendered)
    assert isinstance(data["error"]["message"], str)
