"""Anthropic clients reach any OpenAI-compatible model: /v1/messages translated to chat and back,
plain and streamed, and /v1/messages/count_tokens answered locally (the spine rig, no network)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.unit.spine import BASE_CONFIG, Rig

pytestmark = pytest.mark.asyncio
MODELS = [*BASE_CONFIG["models"], {"name": "claude-code-on-gpt", "deployments": [{"provider": "oa",
                                                                                 "model": "gpt-4o"}]}]
ASK = {"model": "claude-code-on-gpt", "max_tokens": 100, "system": "Be brief.",
       "messages": [{"role": "user", "content": "List the files"}]}


async def test_messages_to_an_openai_deployment(tmp_path: Path) -> None:
    async with Rig(tmp_path, models=MODELS) as rig:
        proto = await rig.send("/v1/messages", ASK)
    sent = rig.calls("oa")[0]
    assert sent.url.endswith("/v1/chat/completions")
    chat = sent.json()
    assert isinstance(chat, dict) and chat["model"] == "gpt-4o"
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    msg = proto.json()
    assert proto.status == 200 and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"][0]["type"] == "text" and msg["stop_reason"] == "end_turn"
    assert msg["usage"]["input_tokens"] > 0


async def test_streamed_messages_to_an_openai_deployment(tmp_path: Path) -> None:
    async with Rig(tmp_path, models=MODELS) as rig:
        proto = await rig.send("/v1/messages", {**ASK, "stream": True})
    events = [f.split(b"\n", 1)[0].removeprefix(b"event: ") for f in proto.streamed.split(b"\n\n") if f]
    assert events[0] == b"message_start" and events[-1] == b"message_stop"
    assert b"content_block_delta" in events
    text = b"".join(msgspec.json.decode(f.split(b"data: ", 1)[1])["delta"].get("text", "").encode()
                    for f in proto.streamed.split(b"\n\n") if b"content_block_delta" in f)
    assert text.startswith(b"This is a mock answer")


async def test_count_tokens_is_answered_locally(tmp_path: Path) -> None:
    async with Rig(tmp_path, models=MODELS) as rig:
        proto = await rig.send("/v1/messages/count_tokens", ASK)
    assert proto.status == 200 and proto.json()["input_tokens"] > 5 and not rig.calls("oa")
