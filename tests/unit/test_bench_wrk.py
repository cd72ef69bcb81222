"""The wrk cross-check (benchmarks/harness/wrk.py): the generated Lua script run by the real wrk."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.harness import scenarios, wrk  # noqa: E402

pytestmark = pytest.mark.skipif(wrk.binary() is None, reason="wrk is not installed (apt-get install -y wrk)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[bytes, dict[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append((body, {k.lower(): v for k, v in self.headers.items()}))
        status = 429 if b'"shed"' in body and len(self.seen) % 2 else 200
        answer = b'{"ok":true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
    httpd.shutdown()
    httpd.server_close()


def test_wrk_sends_unique_realistic_bodies_with_the_targets_headers(server: str) -> None:
    headers = {"authorization": "Bearer sk-company", "x-portkey-provider": "openai"}
    out = wrk.run(server, 4, 1.0, 5.0, scenarios.passthrough_body(), headers, "n0nce", cores=None)
    assert out["connections"] == 4 and out["threads"] == 1
    assert out["ok"] > 10 and out["errors"] == 0 and out["rps"] > 0
    assert out["ok"] <= len(_Handler.seen)  # wrk counts answers; the server saw at least those
    assert 0 < out["latency_ms"]["p50"] <= out["latency_ms"]["p99"] <= out["latency_ms"]["max"]
    bodies = [json.loads(body) for body, _ in _Handler.seen]
    questions = [b["messages"][1]["content"] for b in bodies]
    assert len(set(questions)) == len(questions)  # unique per request: no cache can answer them
    template = json.loads(scenarios.passthrough_body())
    for body in bodies:
        assert body["messages"][0] == template["messages"][0]
        assert (body["max_tokens"], body["temperature"]) == (256, 0.2)
        assert len(body["messages"][1]["content"].split()) == len(template["messages"][1]["content"].split()) + 5
        assert set(body["messages"][1]["content"].split("about ", 1)[1].split(".")[0].split()) <= set(wrk.WORDS)
        assert "n0nce-w" in body["messages"][1]["content"]
    for _, got in _Handler.seen:
        assert got["authorization"] == "Bearer sk-company" and got["x-portkey-provider"] == "openai"
        assert got["content-type"] == "application/json"


def test_wrk_counts_non_2xx_answers_as_errors_not_throughput(server: str) -> None:
    # A quote followed by a digit: the Lua escapes must not swallow the digit (\0341, not \341).
    template = b'{"kind":"shed","note":"a\\"1b\\\\2","id":"{ID}","w":"{WORDS}"}'
    out = wrk.run(server, 2, 1.0, 5.0, template, {}, "n", cores=None)
    assert out["error_kinds"].get("status", 0) > 0 and out["ok"] < out["requests"]
    assert out["rps"] == pytest.approx(out["ok"] / out["duration_s"], rel=0.01)
    assert json.loads(_Handler.seen[0][0])["note"] == 'a"1b\\2'


def test_template_split_and_summary_parse() -> None:
    assert wrk.split_template('a{ID}b{WORDS}c{ID}') == (["a", "b", "c", ""], [0, 1, 0, -1])
    assert wrk.split_template("plain") == (["plain"], [-1])
    assert wrk.lua_string('x"\\\n9') == '"x\\034\\092\\0109"'
    line = (
        'Running 1s test\nWRKJSON {"requests":1000,"duration_us":2000000,"connect":0,"read":1,"write":0,'
        '"status":10,"timeout":2,"p50_us":61000,"p90_us":64000,"p99_us":70500,"max_us":90000,"mean_us":62000.5}\n'
    )
    got = wrk.parse(line)
    assert got["ok"] == 990 and got["errors"] == 13 and got["rps"] == 495.0
    assert got["error_kinds"] == {"read": 1, "status": 10, "timeout": 2}
    assert got["latency_ms"] == {"p50": 61.0, "p90": 64.0, "p99": 70.5, "max": 90.0, "mean": 62.0}
    with pytest.raises(RuntimeError, match="no summary"):
        wrk.parse("garbage")
