"""Cost layers 2 and 3 end to end: compression, prompt-cache markers, cached tokens and /admin/savings.

Official anthropic and openai SDKs against real Granian workers (2) and `gateway mock`. What the
gateway did is read from what the mock received (`GET /_mock/requests`); the ledger's totals are
compared with a hand computation from the usage the SDKs returned and the published prices.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from gateway.transform.compress import compress_anthropic_messages, compress_openai_chat, compress_text
from gateway.transform.compress.compact import compact_prose

from .conftest import Proc, mock_requests, start_mock, start_process

MASTER = "sk-cost-master"
KEYS = ("large", "medium", "small", "client", "openai", "compress", "translated", "responses")
# Published prices used by the hand computations (USD per million tokens): claude-house is deployed
# as claude-sonnet-4-5 (minimum cacheable prefix 1,024 tokens; 4.6 needs 2,048), gpt-4o-mini as itself.
SONNET = {"input": 3.0, "write": 3.75, "read": 0.30, "output": 15.0}
MINI = {"input": 0.15, "cached": 0.075, "output": 0.60}


Claude = Callable[[str], anthropic.Anthropic]


def key_of(name: str) -> str:
    return f"sk-cost-{name}"


@pytest.fixture(scope="module")
def cost_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cost")


@pytest.fixture(scope="module")
def mock(cost_dir: Path) -> Iterator[Proc]:
    p = start_mock(cost_dir, "cost-mock", "--cached-tokens", "64")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gw(cost_dir: Path, mock: Proc) -> Iterator[Proc]:
    cfg = {
        "auth": {"enabled": True, "keys": [{"id": k, "key_env": f"COST_KEY_{k.upper()}"} for k in KEYS]},
        "retries": {"attempts": 0},
        "store": {"embedded_path": str(cost_dir / "store.db")},
        "cache": {"enabled": False},  # every request reaches the transforms and the provider
        "providers": {
            "claude": {"kind": "anthropic", "base_url": mock.url},
            "openai": {"kind": "openai", "base_url": mock.url + "/v1"},
        },
        "models": [
            {"name": "claude-house", "deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            {"name": "claude-chat", "deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai"}]},
        ],
    }
    path = cost_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {f"COST_KEY_{k.upper()}": key_of(k) for k in KEYS} | {"GATEWAY_MASTER_KEY": MASTER}
    p = start_process(["serve", "--config", str(path), "--workers", "2"], cost_dir / "gateway.log", env=env,
                      ready_path="/readyz")
    yield p
    p.stop()


@pytest.fixture
def claude(gw: Proc) -> Iterator[Claude]:
    """anthropic SDK clients for a test's keys, closed after the test."""
    made: list[anthropic.Anthropic] = []

    def make(key: str) -> anthropic.Anthropic:
        made.append(anthropic.Anthropic(base_url=gw.url, api_key=key_of(key), max_retries=0, timeout=20))
        return made[-1]

    yield make
    for c in made:
        c.close()


def plain_text(chars: int) -> str:
    """Instructions with no verbose phrase and no repeated paragraph: compression leaves them alone."""
    nonce = uuid.uuid4().hex
    out = f"Session {nonce}. "
    i = 0
    while len(out) < chars:
        out += f"Rule {i}: reply with facts from source {i % 7} and cite page {i * 3}. "
        i += 1
    text = out[:chars]
    assert compress_text(text, "standard") == (text, 0)
    return text


def received(mock: Proc, marker: str) -> list[dict[str, Any]]:
    """The bodies the mock received whose system prompt contains `marker`, oldest first."""
    out = []
    for req in mock_requests(mock):
        body = req["body"]
        system = body.get("system")
        text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system or [])
        if marker in text or any(marker in str(m.get("content")) for m in body.get("messages", [])):
            out.append(body)
    return out


def ask(client: anthropic.Anthropic, system: Any, stream: bool, **extra: Any) -> Any:
    kw = {"model": "claude-house", "max_tokens": 100, "system": system,
          "messages": [{"role": "user", "content": "What is rule 3?"}], **extra}
    if stream:
        with client.messages.stream(**kw) as s:
            return s.get_final_message().usage
    return client.messages.create(**kw).usage


def sonnet_cost(usages: list[Any]) -> float:
    return sum(u.input_tokens * SONNET["input"] + (u.cache_creation_input_tokens or 0) * SONNET["write"]
               + (u.cache_read_input_tokens or 0) * SONNET["read"] + u.output_tokens * SONNET["output"]
               for u in usages) / 1e6


def sonnet_cache_saving(usages: list[Any]) -> float:
    return sum((u.cache_read_input_tokens or 0) * (SONNET["input"] - SONNET["read"])
               - (u.cache_creation_input_tokens or 0) * (SONNET["write"] - SONNET["input"]) for u in usages) / 1e6


def savings_row(gw: Proc, key: str, requests: int) -> dict[str, Any]:
    """This key's totals from /admin/savings once all its requests are in (workers flush each second)."""
    deadline = time.monotonic() + 15
    while True:
        doc = gw.get_json("/admin/savings", {"authorization": f"Bearer {MASTER}"})
        assert doc["scope"] == "shared"
        row = doc["by_key"].get(key)
        if (row and row["requests"] >= requests) or time.monotonic() > deadline:
            assert row is not None and row["requests"] == requests
            return row  # type: ignore[no-any-return]
        time.sleep(0.2)


# ------------------------------------------------------------------------------ markers


def test_large_system_is_marked_at_once_and_cached_tokens_are_counted(claude: Claude, gw: Proc, mock: Proc) -> None:
    system = plain_text(4500)
    client = claude("large")
    usages = [ask(client, system, stream=False), ask(client, system, stream=True)]
    bodies = received(mock, system[:40])
    assert len(bodies) == 2
    for body in bodies:
        assert body["system"] == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    # The provider primed its cache on the first (plain) answer and read it on the second (streamed).
    assert usages[0].cache_creation_input_tokens > 1000 and not usages[0].cache_read_input_tokens
    assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens

    row = savings_row(gw, "large", 2)
    assert row["cache_write_tokens"] == usages[0].cache_creation_input_tokens
    assert row["cached_tokens"] == usages[1].cache_read_input_tokens
    assert row["input_tokens"] == sum(u.input_tokens for u in usages)
    assert row["output_tokens"] == sum(u.output_tokens for u in usages)
    assert row["cost_usd"] == pytest.approx(sonnet_cost(usages), abs=1e-8)
    assert row["saved_provider_cache_usd"] == pytest.approx(sonnet_cache_saving(usages), abs=1e-8)
    assert row["compression_tokens_saved"] == 0 and row["saved_compression_usd"] == 0


def test_medium_system_is_marked_from_the_third_sighting(claude: Claude, gw: Proc, mock: Proc) -> None:
    system = plain_text(2500)
    client = claude("medium")
    usages = [ask(client, system, stream=i % 2 == 1) for i in range(4)]  # both workers, plain and streamed
    bodies = received(mock, system[:40])
    assert [isinstance(b["system"], list) for b in bodies] == [False, False, True, True]
    assert bodies[0]["system"] == bodies[1]["system"] == system
    assert bodies[2]["system"][0]["cache_control"] == {"type": "ephemeral"}
    # ~640 tokens is under the model's minimum cacheable length (1,024): the provider caches nothing.
    assert not any(u.cache_creation_input_tokens or u.cache_read_input_tokens for u in usages)
    row = savings_row(gw, "medium", 4)
    assert row["cost_usd"] == pytest.approx(sonnet_cost(usages), abs=1e-8)
    assert row["saved_provider_cache_usd"] == pytest.approx(sonnet_cache_saving(usages), abs=1e-8)


def test_small_system_is_never_marked(claude: Claude, gw: Proc, mock: Proc) -> None:
    system = plain_text(1999)
    client = claude("small")
    for i in range(4):
        ask(client, system, stream=i == 3)
    assert [b["system"] for b in received(mock, system[:40])] == [system] * 4


def test_client_markers_are_kept_and_never_exceed_four(claude: Claude, gw: Proc, mock: Proc) -> None:
    client = claude("client")
    mark = {"type": "ephemeral"}
    own = [{"type": "text", "text": plain_text(3000), "cache_control": mark},
           {"type": "text", "text": plain_text(2000)}]
    ask(client, own, stream=False)
    assert received(mock, own[0]["text"][:40])[-1]["system"] == own  # not moved, not duplicated

    tools = [{"name": "lookup", "description": "Look up", "cache_control": mark,
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    tag = uuid.uuid4().hex
    messages = [{"role": "user", "content": [{"type": "text", "text": f"{tag} part {i}", "cache_control": mark}
                                             for i in range(3)]}]
    large = plain_text(5000)
    client.messages.create(model="claude-house", max_tokens=50, system=large, tools=tools,  # type: ignore
                           messages=messages, tool_choice={"type": "none"})  # type: ignore[arg-type]
    sent = received(mock, tag)[-1]
    assert sent["system"] == large and sent["tools"] == tools and sent["messages"] == messages


def test_translated_chat_gets_the_marker_and_its_cache_writes_are_billed(gw: Proc, mock: Proc) -> None:
    system = plain_text(4200)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "q"}]
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key_of("translated"), max_retries=0) as client:
        first = client.chat.completions.create(model="claude-chat", messages=messages).usage  # type: ignore
        stream = client.chat.completions.create(model="claude-chat", messages=messages,  # type: ignore
                                                stream=True, stream_options={"include_usage": True})
        second = [c.usage for c in stream if c.usage][-1]
    for sent in received(mock, system[:40]):
        assert sent["system"] == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    assert first is not None and second is not None and second.prompt_tokens_details is not None
    written = read = second.prompt_tokens_details.cached_tokens  # the mock writes, then reads, the same prefix
    assert written > 1000
    row = savings_row(gw, "translated", 2)
    assert (row["cache_write_tokens"], row["cached_tokens"]) == (written, read)
    hand = ((first.prompt_tokens - written) * SONNET["input"] + written * SONNET["write"]
            + (second.prompt_tokens - read) * SONNET["input"] + read * SONNET["read"]
            + (first.completion_tokens + second.completion_tokens) * SONNET["output"]) / 1e6
    assert row["cost_usd"] == pytest.approx(hand, abs=1e-8)


# ------------------------------------------------------------------------- OpenAI cached tokens


def test_openai_cached_tokens_plain_and_streamed(gw: Proc) -> None:
    question = plain_text(600)
    usages = []
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key_of("openai"), max_retries=0) as client:
        resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
        usages.append(resp.usage)
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": question}])
        usages.append([c.usage for c in stream if c.usage][-1])
    for u in usages:
        assert u is not None and u.prompt_tokens_details is not None
        assert u.prompt_tokens_details.cached_tokens == 64
    row = savings_row(gw, "openai", 2)
    assert row["cached_tokens"] == 128
    assert row["input_tokens"] == sum(u.prompt_tokens - 64 for u in usages)
    hand = sum((u.prompt_tokens - 64) * MINI["input"] + 64 * MINI["cached"] + u.completion_tokens * MINI["output"]
               for u in usages) / 1e6
    assert row["cost_usd"] == pytest.approx(hand, abs=1e-9)
    assert row["saved_provider_cache_usd"] == pytest.approx(128 * (MINI["input"] - MINI["cached"]) / 1e6, abs=1e-9)


# --------------------------------------------------------------------------------- compression

CODE = "```python\ndef prepare(data):\n    # in order to keep it simple\n    return data\n```"
URL = "https://docs.example.com/guide/in-order-to?due_to_the_fact_that=1"
PROSE = ("In order to help the customer, you should take into consideration the fact that they are busy. "
         "Due to the fact that answers are read on phones, in the event that an answer is long, split it. "
         "At this point in time we are not able to offer refunds, with the exception of damaged goods. ")


def test_prose_shrinks_code_and_urls_do_not(claude: Claude, gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    system = f"Support policy {tag}.\n\n" + PROSE * 4 + f"\n\nExample:\n{CODE}\n\nDocs: {URL}\n"
    client = claude("compress")
    request = {"model": "claude-house", "max_tokens": 100, "system": system,
               "messages": [{"role": "user", "content": "Can I get a refund?"}]}
    usage = client.messages.create(**request).usage  # type: ignore[call-overload]
    sent = received(mock, tag)[-1]["system"]
    assert isinstance(sent, str) and len(sent) < len(system) * 0.9
    assert CODE in sent and URL in sent and "in order to" not in sent.replace(CODE, "")
    # The same library, in process, gives the figures the ledger must have counted.
    expected = compress_anthropic_messages(request, "standard")
    assert expected.body["system"] == sent
    removed = expected.tokens_before - expected.tokens_after
    assert removed > 20

    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key_of("compress"), max_retries=0) as oai:
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system},
                                                     {"role": "user", "content": "Refund?"}]}
        oai.chat.completions.create(**chat)  # type: ignore[call-overload]
        oai.chat.completions.create(**chat, extra_headers={"x-gateway-compression": "off"})  # type: ignore
    chats = [r["body"] for r in mock_requests(mock) if r["path"].endswith("/chat/completions")
             and tag in str(r["body"]["messages"][0]["content"])]
    light = compress_openai_chat(chat, "light")  # the OpenAI family's default level
    assert chats[-2]["messages"][0]["content"] == light.body["messages"][0]["content"] != system
    assert chats[-1]["messages"][0]["content"] == system  # opted out
    chat_removed = light.tokens_before - light.tokens_after

    row = savings_row(gw, "compress", 3)
    assert row["compression_tokens_saved"] == removed + chat_removed
    assert row["compaction_tokens_saved"] >= 0 and "saved_compaction_usd" in row  # a layer of its own
    assert row["saved_compression_usd"] == pytest.approx(
        (removed * SONNET["input"] + chat_removed * MINI["input"]) / 1e6, abs=1e-9)
    assert usage.input_tokens > 0
    print(f"\ncompression: anthropic standard {expected.tokens_before}->{expected.tokens_after} tokens,"
          f" openai light {light.tokens_before}->{light.tokens_after}")


def test_responses_and_completions_are_compressed_too(gw: Proc, mock: Proc) -> None:
    tag = uuid.uuid4().hex
    instructions = f"Desk {tag}.\n\n" + PROSE + f"\n\nExample:\n{CODE}\n"
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key_of("responses"), max_retries=0) as oai:
        oai.responses.create(model="gpt-4o-mini", instructions=instructions,
                             input=[{"role": "user", "content": [{"type": "input_text", "text": PROSE}]}])
        oai.responses.create(model="gpt-4o-mini", instructions=instructions, input="Refund?",
                             extra_headers={"x-gateway-compression": "off"})
        oai.completions.create(model="gpt-4o-mini", prompt=f"Note {tag}: " + PROSE, max_tokens=5)
    sent = [r for r in mock_requests(mock) if tag in json.dumps(r["body"])]
    responses = [r["body"] for r in sent if r["path"].endswith("/responses")]
    light = compress_text(compact_prose(instructions), "light")[0]  # compaction, then phrases
    assert light != instructions and CODE in light
    assert responses[0]["instructions"] == light
    assert responses[0]["input"][0]["content"][0]["text"] == compress_text(PROSE, "light")[0]
    assert responses[1]["instructions"] == instructions  # opted out
    completion = next(r["body"] for r in sent if r["path"].endswith("/v1/completions"))
    assert completion["prompt"] == compress_text(f"Note {tag}: " + PROSE, "light")[0]


def test_admin_savings_needs_the_master_key(gw: Proc) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as exc:
        gw.get_json("/admin/savings", {"authorization": f"Bearer {key_of('large')}"})
    exc.value.close()
    assert exc.value.code == 401
