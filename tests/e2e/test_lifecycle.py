"""Process lifecycle: embedded defaults answer at once; SIGTERM drains in-flight streams."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import openai

from .conftest import start_mock, start_process


def test_embedded_defaults_answer_without_config(tmp_path: Path) -> None:
    gw = start_process(["serve", "--workers", "1"], tmp_path / "defaults.log", ready_path="/readyz",
                       env={"GATEWAY_STORE__EMBEDDED_PATH": str(tmp_path / "store.db")})
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
            resp = client.chat.completions.create(model="mock-gpt-4o",
                                                  messages=[{"role": "user", "content": "first steps"}])
            assert resp.choices[0].message.content == "This is a mock answer to: first steps"
            assert {m.id for m in client.models.list()} >= {"mock-gpt-4o", "mock-claude"}
    finally:
        gw.stop()


def test_sigterm_drains_an_in_flight_stream(tmp_path: Path) -> None:
    mock = start_mock(tmp_path, "drain-mock")
    gw = start_process(["serve", "--workers", "2", "--upstream", mock.url], tmp_path / "drain.log",
                       ready_path="/readyz", env={"GATEWAY_STORE__EMBEDDED_PATH": str(tmp_path / "store.db")})
    received: list[bytes] = []
    try:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "drain"}],
                "mock": {"chunks": 20, "chunk_interval_ms": 100}}
        started = threading.Event()

        def read() -> None:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
                for chunk in r.iter_raw():
                    received.append(chunk)
                    started.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert started.wait(10)
        gw.proc.send_signal(signal.SIGTERM)  # mid-stream: about 2 s of chunks still to come
        reader.join(30)
        assert not reader.is_alive()
        stream = b"".join(received)
        assert stream.count(b'"finish_reason":"stop"') == 1 and stream.endswith(b"data: [DONE]\n\n")
        assert gw.proc.wait(30) == 0
    finally:
        gw.stop()
        mock.stop()
