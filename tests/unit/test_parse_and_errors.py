"""Parsing of hostile bodies and rendering of the one error tree in each protocol's shape."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway import errors
from gateway.protocol.views import decode_view, require_model

HOSTILE = [
    (b"", "empty"),
    (b"not json", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
    (b'{"model": 42}', "at `model`"),
    (b'{"model": "m", "stream": "yes"}', "at `stream`"),
    (b'{"model": "m", "temperature": "hot"}', "at `temperature`"),
    (b'{"model": "m", "stream_options": {"include_usage": 3}}', "include_usage"),
    (b'{"model": "m", "vendor": ' + b"[" * 20000 + b"]" * 20000 + b"}", "nested too deeply"),
    (b'{"model": "m", "messages": ' + b"[" * 20000 + b"]" * 20000 + b"}", "at `messages[0]`"),
    (b'{"model": "m"' + b" " * 10, "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
]


@pytest.mark.parametrize(("body", "fragment"), HOSTILE)
def test_hostile_bodies_get_a_clear_400(body: bytes, fragment: str) -> None:
    with pytest.raises(errors.MalformedBody) as exc:
        decode_view(body)
    assert fragment in exc.value.message
    status, rendered = errors.render(exc.value, "openai")
    assert status == 400
    assert json.loads(rendered)["error"]["type"] == "invalid_request_error"


def test_view_keeps_only_what_the_gateway_needs() -> None:
    body = b'{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"temperature":0,' \
           b'"messages":[{"role":"user","content":"hi"}],"vendor":{"x":1}}'
    view = decode_view(body)
    assert view.model == "gpt" and view.stream is True and view.temperature == 0
    assert view.stream_options is not None and view.stream_options.include_usage
    assert view.messages is not None and [(m.role, m.content) for m in view.messages] == [("user", "hi")]


def test_missing_model() -> None:
    with pytest.raises(errors.ModelRequired):
        require_model(decode_view(b'{"messages": []}'))


CASES = [
    (errors.MalformedBody("bad"), 400, "invalid_request_error", "invalid_request_error"),
    (errors.Unauthorized("no"), 401, "authentication_error", "authentication_error"),
    (errors.PermissionDenied("no"), 403, "permission_error", "permission_error"),
    (errors.UnknownModel("no"), 404, "invalid_request_error", "not_found_error"),
    (errors.PayloadTooLarge("big"), 413, "invalid_request_error", "request_too_large"),
    (errors.RequestTimeout("slow body"), 408, "invalid_request_error", "timeout_error"),
    (errors.Overloaded("full"), 503, "service_unavailable", "overloaded_error"),
    (errors.PoolExhausted("no connection"), 503, "service_unavailable", "overloaded_error"),
    (errors.DeploymentsEjected("all out"), 503, "service_unavailable", "overloaded_error"),
    (errors.RateLimited("slow down"), 429, "rate_limit_error", "rate_limit_error"),
    (errors.UpstreamUnreachable("down"), 502, "upstream_error", "api_error"),
    (errors.UpstreamTimeout("late"), 504, "upstream_error", "timeout_error"),
]


@pytest.mark.parametrize(("err", "status", "otype", "atype"), CASES)
def test_each_error_in_both_shapes(err: errors.GatewayError, status: int, otype: str, atype: str) -> None:
    s, body = errors.render(err, "openai")
    assert s == status
    data = json.loads(body)
    assert data["error"]["type"] == otype and data["error"]["message"] == err.message
    s, body = errors.render(err, "anthropic")
    assert s == status
    assert json.loads(body) == {"type": "error", "error": {"type": atype, "message": err.message}}


def test_upstream_status_passes_through_or_translates() -> None:
    anth = msgspec.json.encode({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    err = errors.UpstreamStatus(529, anth, protocol="anthropic")
    assert errors.render(err, "anthropic") == (529, anth)  # same protocol: untouched bytes
    status, body = errors.render(err, "openai")
    assert status == 529 and json.loads(body)["error"]["message"] == "busy"
    oai = errors.UpstreamStatus(429, b'{"error":{"message":"quota","type":"rate_limit_error"}}', protocol="openai")
    status, body = errors.render(oai, "anthropic")
    assert status == 429 and json.loads(body)["error"] == {"type": "rate_limit_error", "message": "quota"}
    assert oai.is_retryable and not errors.UpstreamStatus(400, b"", protocol="openai").is_retryable
    text = errors.UpstreamStatus(502, b"<html>bad gateway</html>", protocol="openai")
    assert "bad gateway" in json.loads(errors.render(text, "anthropic")[1])["error"]["message"]
