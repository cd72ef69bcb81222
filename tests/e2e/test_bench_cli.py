"""`gateway bench` end to end: against a real `gateway mock`, directly and through `gateway serve`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GATEWAY = [sys.executable, "-m", "gateway.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


def _start(args: list[str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*GATEWAY, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    cwd = tmp_path_factory.mktemp("mock")
    proc = _start(["mock", "--port", str(port), "--latency-ms", "20", "--stream-chunks", "8"], port, cwd)
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, "bench", "--no-progress", *args], capture_output=True, text=True, timeout=120)


def test_closed_loop_against_the_mock_writes_a_result(mock_url: str, tmp_path: Path) -> None:
    out = tmp_path / "closed.json"
    run = _bench("--url", mock_url, "--requests", "60", "--concurrency", "6", "--output", str(out))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["kind"] == "gateway bench"
    assert result["url"] == f"{mock_url}/v1/chat/completions"
    assert (result["requests"], result["ok"], result["errors"]) == (60, 60, 0)
    assert result["load"] == {"mode": "closed", "concurrency": 6}
    assert 20.0 <= result["latency_ms"]["p50"] < 1000
    assert result["ttfb_ms"] is None and result["rps"] > 0
    assert "requests 60" in run.stdout


def test_open_loop_streaming_reports_time_to_first_byte(mock_url: str, tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    run = _bench("--url", mock_url, "--requests", "20", "--rps", "40", "--stream", "--output", str(out))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["ok"] == 20 and result["stream"] is True
    assert result["load"] == {"mode": "open", "rps": 40.0}
    assert result["ttfb_ms"]["p50"] <= result["latency_ms"]["p50"]


def test_unreachable_url_counts_errors_and_fails(tmp_path: Path) -> None:
    out = tmp_path / "down.json"
    run = _bench("--url", f"http://127.0.0.1:{_free_port()}", "--requests", "5", "--output", str(out))
    assert run.returncode == 1
    result = json.loads(out.read_text())
    assert result["ok"] == 0 and result["errors"] == 5


def test_through_the_gateway_and_compare(mock_url: str, tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(["serve", "--port", str(port), "--workers", "1", "--upstream", mock_url], port, tmp_path)
    try:
        gw = tmp_path / "gw.json"
        run = _bench("--url", f"http://127.0.0.1:{port}", "--duration", "1", "--concurrency", "4", "--output", str(gw))
        assert run.returncode == 0, run.stderr + run.stdout
    finally:
        _stop(proc)
    direct = tmp_path / "direct.json"
    assert _bench("--url", mock_url, "--duration", "1", "--concurrency", "4", "--output", str(direct)).returncode == 0
    assert json.loads(gw.read_text())["errors"] == 0
    cmp = subprocess.run([*GATEWAY, "bench", "compare", str(direct), str(gw)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr
    assert "latency_ms.p50" in cmp.stdout
