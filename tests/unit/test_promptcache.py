"""Prompt-cache markers (rules, breakpoint limit, client markers), cached-token parsing, the transform stage."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from gateway.config import load_config
from gateway.mock import anthropic as mock_anth
from gateway.mock import responses as mock_oai
from gateway.pipeline.context import EndpointSpec, PromptCacheRecord, RequestContext
from gateway.pipeline.respond import StreamTap
from gateway.protocol.usage import Usage, parse_usage, usage_of_body
from gateway.providers.routing import Router
from gateway.providers.upstream import Provider
from gateway.store import StoreUnavailable
from gateway.transform import promptcache as pc
from gateway.transform.part import THREAD_BYTES, Transform

MARK = {"type": "ephemeral"}


def text_of(n: int, seed: str = "x") -> str:
    return (f"Rule {seed}: answer plainly. " * (n // 20 + 1))[:n]


def body(system: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 10, "system": system,
            "messages": [{"role": "user", "content": "hi"}], **extra}


# ------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("chars", "seen", "rule"), [
    (4000, 1, "large"), (9000, 0, "large"), (3999, 1, None), (3999, 2, None), (3999, 3, "repeat"),
    (2000, 3, "repeat"), (2000, 7, "repeat"), (1999, 3, None), (1999, 50, None), (0, 9, None),
])
def test_decide(chars: int, seen: int, rule: str | None) -> None:
    assert pc.decide(chars, seen) == rule


def test_only_medium_content_is_counted() -> None:
    assert [pc.needs_count(n) for n in (1999, 2000, 3999, 4000)] == [False, True, True, False]


def test_mark_string_system_without_mutating_the_input() -> None:
    original = body(text_of(4000))
    before = copy.deepcopy(original)
    marked = pc.mark_system(original)
    assert original == before
    assert marked is not None
    assert marked["system"] == [{"type": "text", "text": original["system"], "cache_control": MARK}]
    assert marked["messages"] is original["messages"]  # only the path to the change is copied


def test_mark_goes_on_the_last_text_block_and_keeps_its_keys() -> None:
    system = [{"type": "text", "text": "a" * 3000}, {"type": "text", "text": "b" * 2000, "citations": None},
              {"type": "image", "source": {}}]
    marked = pc.mark_system(body(system))
    assert marked is not None
    assert marked["system"][0] == {"type": "text", "text": "a" * 3000}
    assert marked["system"][1] == {"type": "text", "text": "b" * 2000, "citations": None, "cache_control": MARK}
    assert marked["system"][2] == {"type": "image", "source": {}}
    assert "cache_control" not in system[1]


def test_client_marker_on_system_is_kept_in_place_and_not_duplicated() -> None:
    system = [{"type": "text", "text": "a" * 3000, "cache_control": MARK}, {"type": "text", "text": "b" * 3000}]
    b = body(system)
    assert pc.system_is_marked(b)
    assert pc.mark_system(b) is None
    assert pc.count_breakpoints(b) == 1


def breakpoint_body(n: int) -> dict[str, Any]:
    """A large system prompt plus `n` client markers spread over tools and messages."""
    tools = [{"name": "t", "input_schema": {"type": "object", "properties": {"cache_control": {"type": "string"}}},
              **({"cache_control": MARK} if n >= 1 else {})}]
    content: list[dict[str, Any]] = [{"type": "text", "text": f"part {i}", **({"cache_control": MARK} if n >= i + 2
                                                                              else {})} for i in range(2)]
    result = {"type": "tool_result", "tool_use_id": "x",
              "content": [{"type": "text", "text": "r", **({"cache_control": MARK} if n >= 4 else {})}]}
    return body(text_of(5000), tools=tools,
                messages=[{"role": "user", "content": content},
                          {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t",
                                                             "input": {}}]},
                          {"role": "user", "content": [result]}])


@pytest.mark.parametrize("existing", [0, 1, 2, 3, 4])
def test_never_more_than_four_breakpoints(existing: int) -> None:
    b = breakpoint_body(existing)
    assert pc.count_breakpoints(b) == existing  # a schema property named cache_control is not one
    marked = pc.mark_system(b)
    if existing >= 4:
        assert marked is None
        return
    assert marked is not None and existing < pc.count_breakpoints(marked) <= 4
    # The client's markers stay where they were.
    assert all(t.get("cache_control") == MARK for t in marked["tools"][: existing >= 1])
    kept = [bl for bl in b["messages"][0]["content"] if bl.get("cache_control")]
    assert all(bl in marked["messages"][0]["content"] for bl in kept)


def test_nothing_to_mark() -> None:
    assert pc.mark_system(body("")) is None
    assert pc.mark_system({"model": "m", "messages": []}) is None
    assert pc.mark_system(body([{"type": "image", "source": {}}])) is None


def test_chat_system_text_matches_translation() -> None:
    from gateway.providers.translate import chat_to_anthropic

    chat = {"model": "m", "messages": [
        {"role": "system", "content": "one"}, {"role": "user", "content": "q"},
        {"role": "developer", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "!"}]}]}
    assert pc.chat_system_text(chat) == chat_to_anthropic(chat, "m")["system"] == "one\n\ntwo!"


# ------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
      "prompt_tokens_details": {"cached_tokens": 64}}, Usage(input=36, cache_read=64, output=7)),
    ({"prompt_tokens": 10, "completion_tokens": 2}, Usage(input=10, output=2)),
    ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, Usage(input=10, output=2)),
    ({"input_tokens": 50, "output_tokens": 5, "total_tokens": 55, "input_tokens_details": {"cached_tokens": 20},
      "output_tokens_details": {"reasoning_tokens": 0}}, Usage(input=30, cache_read=20, output=5)),
    ({"input_tokens": 12, "output_tokens": 9, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 0},
     Usage(input=12, cache_write=1000, output=9)),
    ({"input_tokens": 12, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1000},
     Usage(input=12, cache_read=1000, output=9)),
    ({"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": 300,
      "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}},
     Usage(input=3, cache_write=100, cache_write_1h=200, output=1)),
    ({"input_tokens": 4, "output_tokens": 2}, Usage(input=4, output=2)),
])
def test_parse_every_usage_shape(usage: dict[str, Any], expected: Usage) -> None:
    assert parse_usage(usage) == expected


def test_unusable_usage() -> None:
    assert parse_usage(None) is None and parse_usage({}) is None and parse_usage({"foo": 1}) is None
    assert usage_of_body(b"not json") is None and usage_of_body(None) is None
    assert usage_of_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1}}') == Usage(input=3, output=1)


def sse(events: list[tuple[str | None, Any]], done: bool) -> list[bytes]:
    """One frame per event, as the mock sends them."""
    out = [(b"event: " + n.encode() + b"\n" if n else b"") + b"data: " + msgspec.json.encode(d) + b"\n\n"
           for n, d in events]
    return out + ([b"data: [DONE]\n\n"] if done else [])


def tapped(frames: list[bytes]) -> Usage | None:
    """The usage a StreamTap collects from a stream, as parsed by the ledger."""
    tap = StreamTap(None)
    for frame in frames:
        tap.feed(frame)
    return parse_usage(tap.usage)


def test_streamed_anthropic_usage_with_cache_fields() -> None:
    b = body("s" * 4000, stream=True)
    for cache, expected in (((1000, 0), Usage(cache_write=1000)), ((0, 1000), Usage(cache_read=1000))):
        full = mock_anth.message(b, 1, cache)["usage"]
        stream = sse(list(mock_anth.events(b, 1, 4, cache)), done=False)
        got = tapped(stream)
        assert got == Usage(input=full["input_tokens"], output=full["output_tokens"],
                                 cache_read=expected.cache_read, cache_write=expected.cache_write)


def test_streamed_openai_chat_usage_with_cached_tokens() -> None:
    b = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": "q" * 800}]}
    full = mock_oai.chat_completion(b, 1, 64)["usage"]
    got = tapped(sse([(None, c) for c in mock_oai.chat_chunks(b, 1, 5, 64)], done=True))
    assert got == Usage(input=full["prompt_tokens"] - 64, cache_read=64, output=full["completion_tokens"])


def test_streamed_responses_usage_with_cached_tokens() -> None:
    b = {"model": "m", "stream": True, "input": "q" * 400}
    events = mock_oai.responses_events(b, 1, 5)
    events[-1][1]["response"]["usage"]["input_tokens_details"] = {"cached_tokens": 40}
    got = tapped(sse(list(events), done=False))
    assert got == Usage(input=60, cache_read=40, output=events[-1][1]["response"]["usage"]["output_tokens"])


# ------------------------------------------------------------------------------ the stage


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.counts: dict[str, int] = {}
        self.fail = fail

    async def hit_count(self, key: str, ttl_s: float) -> int:
        if self.fail:
            raise StoreUnavailable("down")
        assert ttl_s == 900.0
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


CONFIG = """
providers:
  an: {kind: anthropic, base_url: "https://api.anthropic.com"}
  oa: {kind: openai, base_url: "https://api.openai.com/v1"}
models:
  - {name: claude, deployments: [{provider: an, model: claude-sonnet-4-5}]}
  - {name: claude-off, compression: "off", deployments: [{provider: an}]}
  - {name: gpt, deployments: [{provider: oa}]}
"""


class Rig:
    """The transform part over a FakeStore, and the router that plans each request."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.store: FakeStore | None = FakeStore()

    def part(self) -> Transform:
        return Transform(self.store)  # type: ignore[arg-type]


@pytest.fixture
def rt(tmp_path: Any) -> Rig:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path, environ={})
    providers = {name: Provider(name, p, 0) for name, p in cfg.providers.items()}
    return Rig(Router(cfg, providers))


def context(rt: Rig, endpoint: str, data: dict[str, Any], headers: dict[str, str] | None = None) -> RequestContext:
    spec = EndpointSpec("messages", "anthropic") if endpoint == "messages" else EndpointSpec("chat", "openai")
    ctx = RequestContext(spec, headers or {})
    ctx.body = msgspec.json.encode(data)
    ctx.model = data["model"]
    ctx.plan = rt.router.plan(ctx.model, spec.protocol, spec.name)
    return ctx


async def run(rt: Rig, endpoint: str, data: dict[str, Any],
              headers: dict[str, str] | None = None) -> RequestContext:
    ctx = context(rt, endpoint, data, headers)
    await rt.part().apply(ctx)
    return ctx


def pcr(ctx: RequestContext) -> PromptCacheRecord:
    assert ctx.prompt_cache is not None
    return ctx.prompt_cache


def sent_system(ctx: RequestContext) -> Any:
    return (ctx.data if ctx.changed else ctx.json())["system"]  # type: ignore[index]


async def test_a_cacheable_conversation_gets_its_breakpoints_at_once(rt: Rig) -> None:
    """Over the model's minimum cacheable length: the conversation's breakpoints, no sighting count."""
    ctx = await run(rt, "messages", body(text_of(4200)))
    assert ctx.changed and sent_system(ctx)[-1]["cache_control"] == MARK
    assert pcr(ctx) == PromptCacheRecord(injected=True, rule="conversation")
    assert rt.store is not None and rt.store.counts == {}  # large prompts need no counting


async def test_medium_system_is_marked_from_the_third_sighting(rt: Rig) -> None:
    marks = []
    for _ in range(5):
        ctx = await run(rt, "messages", body(text_of(2500)))
        marks.append(pcr(ctx).rule)
        assert isinstance(sent_system(ctx), list) == (marks[-1] == "repeat")
    assert marks == [None, None, "repeat", "repeat", "repeat"]
    assert rt.store is not None
    assert list(rt.store.counts) == [pc.seen_key("claude-sonnet-4-5", pc.system_hash(text_of(2500)))]


async def test_small_system_is_never_marked_nor_counted(rt: Rig) -> None:
    for _ in range(4):
        ctx = await run(rt, "messages", body(text_of(1999)))
        assert not ctx.changed and pcr(ctx).injected is False
    assert rt.store is not None and rt.store.counts == {}


async def test_store_down_degrades_to_the_large_rule(rt: Rig) -> None:
    rt.store = FakeStore(fail=True)
    for _ in range(3):
        assert pcr(await run(rt, "messages", body(text_of(3000)))).injected is False
    assert pcr(await run(rt, "messages", body(text_of(4000)))).rule == "large"
    rt.store = None
    assert pcr(await run(rt, "messages", body(text_of(4000)))).rule == "large"


async def test_client_markers_are_respected_by_the_stage(rt: Rig) -> None:
    data = breakpoint_body(4)
    ctx = await run(rt, "messages", data)
    assert pcr(ctx).injected is False
    sent = ctx.data if ctx.changed else ctx.json()
    assert sent is not None and pc.count_breakpoints(sent) == 4


async def test_prompt_cache_opt_out_header(rt: Rig) -> None:
    ctx = await run(rt, "messages", body(text_of(5000)), {"x-gateway-prompt-cache": "off"})
    assert pcr(ctx).injected is False and isinstance(sent_system(ctx), str)


async def test_translated_chat_asks_for_the_marker_at_translation(rt: Rig) -> None:
    chat = {"model": "claude", "messages": [{"role": "system", "content": text_of(4100)},
                                            {"role": "user", "content": "q"}]}
    ctx = await run(rt, "chat", chat)
    assert pcr(ctx).mark_translated is True and pcr(ctx).rule == "large"
    plain = await run(rt, "chat", {**chat, "model": "gpt"})  # OpenAI caches by itself
    assert plain.prompt_cache is None


PROSE = ("In order to help the user, you should answer prior to asking questions. Due to the fact that "
         "users are busy, in the event that a request is unclear, ask once. ")


async def test_compression_is_recorded_and_the_client_dict_untouched(rt: Rig) -> None:
    data = body(PROSE * 5 + "See https://example.com/in-order-to and `in order to`.")
    ctx = context(rt, "messages", data)
    client = copy.deepcopy(ctx.json())
    part = rt.part()
    await part.apply(ctx)
    figures = ctx.compression
    assert figures is not None
    assert figures.tokens_before == figures.tokens_after == 0  # counted after the answer went out
    await part.count_tokens_saved(ctx)
    assert figures.phrases_replaced >= 10 and 0 < figures.tokens_after < figures.tokens_before
    assert ctx.changed and ctx.data is not None and ctx.data["system"] != client["system"]
    assert "https://example.com/in-order-to" in ctx.data["system"] and "`in order to`" in ctx.data["system"]
    assert msgspec.json.decode(ctx.body) == client  # the raw bytes are what the client sent


async def test_compression_off_by_route_and_by_header(rt: Rig) -> None:
    off_route = await run(rt, "messages", {**body(PROSE), "model": "claude-off"})
    off_header = await run(rt, "messages", body(PROSE), {"x-gateway-compression": "OFF"})
    for ctx in (off_route, off_header):
        assert not ctx.changed and ctx.compression is None


async def test_large_bodies_are_compressed_in_a_thread(rt: Rig, monkeypatch: Any) -> None:
    import asyncio

    calls = []
    real = asyncio.to_thread

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    big = body(PROSE * (THREAD_BYTES // len(PROSE) + 5))
    small = await run(rt, "messages", body(PROSE))
    large = await run(rt, "messages", big)
    assert calls == ["compress_anthropic_messages"]
    await rt.part().count_tokens_saved(large)
    assert small.compression is not None and small.compression.phrases_replaced > 0
    assert large.compression is not None and large.compression.tokens_after > 0
    assert pcr(large).rule == "conversation"  # marked after compression


async def test_unplanned_requests_pass(rt: Rig) -> None:
    ctx = context(rt, "messages", body(text_of(5000)))
    ctx.plan = None  # refused before routing: nothing to transform
    await rt.part().apply(ctx)
    assert not ctx.changed and ctx.compression is None and ctx.prompt_cache is None
