"""The C load driver (benchmarks/driver/loadgen.c) against a small local HTTP/1.1 server."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.harness import driver  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.bodies.append(body)
        req = json.loads(body)
        if req.get("status"):
            self.send_response(int(req["status"]))
            if req.get("retry"):
                self.send_header("Retry-After", "1")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if req.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(5):
                piece = f"data: {i}\n\n".encode()
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\nx-trailer: 1\r\n\r\n")
            return
        answer = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        if req.get("anchor"):
            self.send_header("X-Cache-Hit", "true")
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
    httpd.shutdown()
    httpd.server_close()


def test_closed_loop_sends_unique_bodies_over_keep_alive(server: str) -> None:
    load = driver.Load(
        url=server,
        mode="closed",
        connections=4,
        duration=0.6,
        warmup=0.1,
        body=b'{"id":"{ID}","words":"{WORDS}"}',
    )
    out = driver.run(load, cores=None)
    assert out.ok > 20 and out.errors == 0
    assert out.summary["conns_opened"] == 4  # keep-alive: no reconnects
    ids = [json.loads(b)["id"] for b in _Handler.bodies]
    assert len(set(ids)) == len(ids)
    words = json.loads(_Handler.bodies[0])["words"].split()
    assert len(words) == 6
    summary = driver.summarize(out)
    assert summary["success_rate"] == 1.0 and summary["latency_ms"]["count"] == out.ok


def test_open_loop_sends_the_scheduled_count(server: str) -> None:
    load = driver.Load(url=server, mode="open", rate=200, connections=50, duration=1.0, warmup=0.0, body=b"{}")
    out = driver.run(load, cores=None)
    assert out.measured == 200
    assert out.ok == 200
    assert out.summary["max_schedule_lag_ms"] < 50


def test_chunked_streams_complete_and_report_ttfb(server: str) -> None:
    load = driver.Load(
        url=server,
        mode="open",
        rate=50,
        connections=10,
        duration=0.4,
        warmup=0.0,
        body=b'{"stream":true,"n":"{ID}"}',
    )
    out = driver.run(load, cores=None)
    assert out.ok == out.measured == 20
    assert len(out.ttfb) == 20 and all(t <= lat for t, lat in zip(out.ttfb, out.latency, strict=True))


def test_status_errors_and_cache_hits_are_counted(server: str) -> None:
    bad = driver.Load(url=server, mode="open", rate=50, connections=5, duration=0.2, warmup=0.0, body=b'{"status":503}')
    out = driver.run(bad, cores=None)
    assert out.ok == 0 and out.errors == out.measured == 10
    assert out.status_counts == {"503": 10}
    mixed = driver.Load(
        url=server,
        mode="open",
        rate=100,
        connections=5,
        duration=0.5,
        warmup=0.0,
        body=b'{"n":"{ID}"}',
        repeat_body=b'{"anchor":1}',
        repeat_pct=50,
    )
    out = driver.run(mixed, cores=None)
    summary = driver.summarize(out)
    assert summary["hits"] == 25 and summary["hit_rate"] == 0.5
    assert "hit_latency_ms" in summary


def test_connection_refused_is_an_error_not_a_crash() -> None:
    from benchmarks.harness.procs import free_port

    load = driver.Load(
        url=f"http://127.0.0.1:{free_port()}/x",
        mode="open",
        rate=20,
        connections=5,
        duration=0.3,
        warmup=0.0,
        body=b"{}",
        timeout=1.0,
    )
    out = driver.run(load, cores=None)
    assert out.ok == 0 and out.measured == 6
    assert out.summary["errors"]["connect"] == 6


def test_shed_answers_are_counted_with_their_retry_after(server: str) -> None:
    shed = driver.Load(
        url=server,
        mode="open",
        rate=100,
        connections=5,
        duration=0.4,
        warmup=0.0,
        body=b'{"status":429,"retry":1,"n":"{ID}"}',
    )
    summary = driver.summarize(driver.run(shed, cores=None))
    assert summary["status_counts"] == {"429": 40} and summary["ok"] == 0
    assert summary["shed"]["count"] == 40 and summary["shed"]["with_retry_after"] == 40
    assert summary["shed"]["latency_ms"]["count"] == 40 and summary["answered_latency_ms"]["count"] == 40
    bare = driver.Load(
        url=server, mode="open", rate=100, connections=5, duration=0.2, warmup=0.0, body=b'{"status":503}'
    )
    summary = driver.summarize(driver.run(bare, cores=None))
    assert summary["shed"]["count"] == 20 and summary["shed"]["with_retry_after"] == 0  # shed without saying when
    ok = driver.summarize(driver.run(driver.Load(url=server, mode="open", rate=50, connections=5, duration=0.2,
                                                 warmup=0.0, body=b"{}"), cores=None))
    assert "shed" not in ok  # nothing shed: no section
