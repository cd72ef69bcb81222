"""Gemini and Bedrock: golden translations byte for byte, routing, URLs, credentials and signing,
errors in the caller's shape, usage into the one Usage.

Golden files live in tests/unit/golden/{gemini,bedrock}/; `python -m tests.unit.golden.native`
rewrites them after a deliberate change (review the diff)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.config import ProviderConfig, load_config
from gateway.errors import BadRequest, UnsupportedRoute, UpstreamStatus, render
from gateway.mock import bedrock as mock_bedrock
from gateway.protocol.usage import Usage, parse_usage
from gateway.providers.mock_transport import MockRequest, MockResponse, MockTransport
from gateway.providers.routing import NATIVE, Router
from gateway.providers.upstream import Provider
from gateway.providers.via_chat import ChatVia, MessagesVia
from tests.unit.golden import HERE
from tests.unit.golden.native import render_all

RENDERED = render_all()


def test_every_golden_file_has_a_case() -> None:
    on_disk = {str(p.relative_to(HERE)) for d in ("gemini", "bedrock") for p in (HERE / d).iterdir()}
    assert on_disk == set(RENDERED)


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_translation_matches_its_golden_file(name: str) -> None:
    assert RENDERED[name] == (HERE / name).read_bytes(), f"{name} changed: regenerate and review the diff"


def _json(name: str) -> Any:
    return json.loads(RENDERED[name])


# ----------------------------------------------------------------------------- what the goldens mean


def test_gemini_names_a_tool_result_after_the_call_it_answers() -> None:
    req = _json("gemini/chat_request_tools_round_trip.json")
    response = req["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "get_weather", "response": {"temp_c": 18, "sky": "clear"}}


def test_gemini_call_ids_find_their_calls_in_the_next_turn() -> None:
    chat, _ = NATIVE["gemini"]
    first, _ = chat.response(msgspec.json.encode({"responseId": "abc", "candidates": [{"content": {"parts": [
        {"functionCall": {"name": "lookup", "args": {"q": "x"}}}]}, "finishReason": "STOP"}]}), "m")
    call = json.loads(first)["choices"][0]["message"]["tool_calls"][0]
    follow_up = {"model": "m", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "found"}]}
    out = json.loads(chat.request(msgspec.json.encode(follow_up), None, "gemini-2.5-flash", "m", changed=False,
                                  mark_cache=False))
    assert out["contents"][-1]["parts"][0]["functionResponse"]["name"] == "lookup"


def test_a_thought_signature_rides_in_the_call_id_and_comes_back() -> None:
    [first, second] = _json("gemini/chat_response_function_call.json")["choices"][0]["message"]["tool_calls"]
    assert first["id"] == "call_r2_0_ts_c2lnLzErPQ" and second["id"] == "call_r2_1"  # URL-safe, unpadded
    sent = _json("gemini/chat_request_signed_tool_call.json")["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "c2lnLzErPQ=="  # the signature as Gemini gave it
    result = _json("gemini/chat_request_signed_tool_call.json")["contents"][2]["parts"][0]
    assert result["functionResponse"]["name"] == "get_weather"


def test_thoughts_are_billed_as_output_and_not_shown() -> None:
    body = _json("gemini/chat_response_text.json")
    assert body["choices"][0]["message"]["content"] == "Hello there."
    assert _json("gemini/response_text.usage.json") == {"input": 20, "cache_read": 100, "cache_write": 0,
                                                        "cache_write_1h": 0, "output": 13}


def test_bedrock_usage_keeps_cache_reads_and_writes_apart() -> None:
    assert parse_usage({"inputTokens": 12, "outputTokens": 4, "cacheReadInputTokens": 100,
                        "cacheWriteInputTokens": 50}) == Usage(input=12, cache_read=100, cache_write=50, output=4)
    assert _json("bedrock/chat_response_text.json")["usage"]["prompt_tokens"] == 212


def test_a_stream_cut_before_its_finish_has_no_finish_chunk() -> None:
    frames = RENDERED["gemini/chat_stream_cut_before_finish_usage.sse"].split(b"\n\n")
    assert not any(b'"finish_reason":"' in f for f in frames)


def test_a_corrupt_bedrock_frame_ends_the_stream_as_an_error() -> None:
    assert b"message CRC mismatch" in RENDERED["bedrock/chat_stream_corrupt_frame.sse"]
    assert b"Hel" not in RENDERED["bedrock/chat_stream_corrupt_frame.sse"]
    assert b"event: error" in RENDERED["bedrock/messages_stream_corrupt_frame.sse"]
    assert b"message_stop" not in RENDERED["bedrock/messages_stream_corrupt_frame.sse"]


def test_bedrock_refuses_an_image_it_cannot_fetch() -> None:
    chat, _ = NATIVE["bedrock"]
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}
    with pytest.raises(BadRequest) as exc:
        chat.request(msgspec.json.encode(body), None, "amazon.nova-pro-v1:0", "m", changed=False, mark_cache=False)
    status, rendered = render(exc.value, "anthropic")
    assert status == 400 and json.loads(rendered)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("wire", "body", "message"), [
    ("gemini", b'{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}',
     "API key not valid."),
    ("bedrock", b'{"message": "The security token included in the request is invalid."}',
     "The security token included in the request is invalid."),
])
def test_provider_errors_come_back_in_the_callers_shape(wire: Any, body: bytes, message: str) -> None:
    err = UpstreamStatus(400, body, protocol=wire, provider=wire)
    status, openai = render(err, "openai")
    assert status == 400 and json.loads(openai)["error"]["message"] == message
    _, anthropic = render(err, "anthropic")
    assert json.loads(anthropic) == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


# ----------------------------------------------------------------------------- routing and providers

CONFIG = """
providers:
  gem: {kind: gemini, api_key_env: GEMINI_KEY}
  bed: {kind: bedrock, region: eu-west-3}
  oai: {kind: openai, base_url: "http://oai/v1"}
models:
  - {name: flash, deployments: [{provider: gem, model: gemini-2.5-flash}]}
  - {name: nova, deployments: [{provider: bed, model: "amazon.nova-pro-v1:0"}], fallbacks: [gpt]}
  - {name: gpt, deployments: [{provider: oai}]}
"""


@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Provider]:
    monkeypatch.setenv("GEMINI_KEY", "g-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    path = tmp_path / "g.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path, environ={})
    return {n: Provider(n, p, 0) for n, p in cfg.providers.items()}


def test_the_router_reaches_both_from_both_kinds_of_client(tmp_path: Path, providers: dict[str, Provider]) -> None:
    path = tmp_path / "g.yaml"
    router = Router(load_config(path, environ={}), providers)
    assert isinstance(router.plan("flash", "openai", "chat").targets[0].translator, ChatVia)
    assert isinstance(router.plan("flash", "anthropic", "messages").targets[0].translator, MessagesVia)
    nova = router.plan("nova", "anthropic", "messages").targets
    assert [type(t.translator).__name__ for t in nova] == ["MessagesVia", "MessagesToChat"]  # then the fallback
    with pytest.raises(UnsupportedRoute):
        router.plan("flash", "openai", "embeddings")


def test_gemini_urls_and_key(providers: dict[str, Provider]) -> None:
    gem = providers["gem"]
    assert gem.url("gemini_generate", "gemini-2.5-flash") == \
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert gem.url("gemini_stream", "models/gemini-2.5-pro") == \
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    headers = gem.request_headers("gemini_generate", {"anthropic-beta": "x", "authorization": "Bearer client"})
    assert headers == {"x-goog-api-key": "g-secret", "content-type": "application/json"}


async def test_bedrock_requests_are_signed_as_sent(providers: dict[str, Provider]) -> None:
    seen: list[MockRequest] = []

    async def answer(req: MockRequest) -> MockResponse:
        seen.append(req)
        return MockResponse(200, b'{"output": {"message": {"content": [{"text": "ok"}]}}}')

    bed = providers["bed"]
    bed.transport = MockTransport(answer)
    body = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    resp = await bed.send("converse", "amazon.nova-pro-v1:0", body, {}, {"traceparent": "00-abc-def-01"})
    resp.release()
    [req] = seen
    assert req.url == "https://bedrock-runtime.eu-west-3.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse"
    assert req.headers["x-amz-security-token"] == "session-token"
    assert "host" not in req.headers  # the transport writes it; it is signed as the transport writes it
    sent = {**req.headers, "host": "bedrock-runtime.eu-west-3.amazonaws.com"}
    path = req.url.split(".com", 1)[1]
    assert mock_bedrock.check_signature("POST", path, sent, body, "aws-secret") is None
    assert "traceparent" in req.headers["authorization"]  # the trace header is signed too
    assert mock_bedrock.check_signature("POST", path, sent, body + b" ", "aws-secret") is not None
    assert mock_bedrock.check_signature("POST", path, sent, body, "other-secret") is not None


async def test_bedrock_without_credentials_is_a_clear_400(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    bed = Provider("bed", ProviderConfig(kind="bedrock", region="us-east-1"), 0, MockTransport(_never))
    with pytest.raises(BadRequest, match="no AWS credentials"):
        await bed.send("converse", "amazon.nova-lite-v1:0", b"{}", {})


async def _never(req: MockRequest) -> MockResponse:
    raise AssertionError("nothing should be sent")


def test_a_bedrock_api_key_is_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDROCK_KEY", "bedrock-api-key")
    bed = Provider("bed", ProviderConfig(kind="bedrock", region="us-west-2", api_key_env="BEDROCK_KEY"), 0)
    headers = bed.request_headers("converse_stream", {})
    assert headers["authorization"] == "Bearer bedrock-api-key"
    assert headers["accept"] == "application/vnd.amazon.eventstream"


def test_bedrock_takes_its_region_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("providers: {bed: {kind: bedrock}}\nmodels: [{name: n, deployments: [{provider: bed}]}]\n")
    cfg = load_config(path, environ={"AWS_REGION": "ap-south-1"})
    assert Provider("bed", cfg.providers["bed"], 0).root == "https://bedrock-runtime.ap-south-1.amazonaws.com"


# ----------------------------------------------------------------------------- hostile shapes

def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)  # type: ignore[index, call-overload]
    return copy


@pytest.mark.parametrize("kind", ["gemini", "bedrock"])
def test_any_value_of_the_wrong_type_is_a_400_or_ignored_never_a_crash(kind: str) -> None:
    # Every value of every golden request replaced by each wrong type: what the request view lets
    # through must translate or be refused with BadRequest (a 400 in the caller's shape).
    from gateway.protocol.views import decode_view, require_model
    from tests.unit.golden.native import CHAT_REQUESTS, MESSAGES_REQUESTS

    chat, messages = NATIVE[kind]
    tried = 0
    for endpoint, translator, cases in (("chat", chat, CHAT_REQUESTS), ("messages", messages, MESSAGES_REQUESTS)):
        for case in cases.values():
            for path in _paths(case)[1:]:
                for wrong in (None, 7, "x", [], {}, [None], {"type": 3}):
                    body = msgspec.json.encode(_replace(case, path, wrong))
                    try:
                        require_model(decode_view(body, endpoint))
                    except BadRequest:
                        continue
                    tried += 1
                    try:
                        translator.request(body, None, "model-id", "m", changed=False, mark_cache=False)
                    except BadRequest:
                        pass
    assert tried > 500


@pytest.mark.parametrize("kind", ["gemini", "bedrock"])
def test_any_answer_shape_translates_without_a_crash(kind: str) -> None:
    # Whatever the provider sends in a 200 (a value of the wrong type anywhere), plain or streamed:
    # the client gets an answer, never a 500 or a dead stream.
    from tests.unit.golden.native import BEDROCK_RESPONSES, GEMINI_RESPONSES, _ev, _gemini_sse

    chat, messages = NATIVE[kind]
    responses = GEMINI_RESPONSES if kind == "gemini" else BEDROCK_RESPONSES
    tried = 0
    for case in responses.values():
        for path in _paths(case)[1:]:
            for wrong in (None, 7, "x", [], {}, [None]):
                bad = _replace(case, path, wrong)
                for translator in (chat, messages):
                    translator.response(msgspec.json.encode(bad), "m")
                    if kind == "gemini":
                        raw = _gemini_sse([bad])
                    else:
                        raw = b"".join(_ev(k, bad if isinstance(bad, dict) else {}) for k in (
                            "messageStart", "contentBlockStart", "contentBlockDelta", "messageStop", "metadata"))
                    st = translator.stream("m", True, [])
                    st.feed(raw)
                    st.finish()
                    tried += 1
    assert tried > 100
