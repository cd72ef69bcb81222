"""Result files and `gateway bench compare`; the client's pure helpers; the CLI wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gateway import bench
from gateway.bench import client, report


def _result(p50: float, rps: float, requests: int = 100) -> dict:
    return {
        "kind": "gateway bench",
        "requests": requests,
        "rps": rps,
        "success_rate": 1.0,
        "latency_ms": {"count": requests, "p50": p50, "p99": p50 * 2},
        "status_counts": {"200": requests},
        "stream": False,
    }


def test_write_json_is_atomic_and_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "r.json"
    report.write_json(target, _result(60.0, 800.0))
    assert json.loads(target.read_text())["rps"] == 800.0
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temporary file left
    assert report.read_json(target)["latency_ms"]["p50"] == 60.0


def test_flatten_keys_lists_of_objects_by_their_key() -> None:
    doc = {"levels": [{"key": "overhead@500rps", "p50": 1.0}, {"key": "x", "ok": True}], "n": [3, 4]}
    flat = dict(report.flatten(doc))
    assert flat == {"levels[overhead@500rps].p50": 1.0, "n[0]": 3.0, "n[1]": 4.0}  # booleans skipped


def test_compare_marks_direction_per_metric() -> None:
    deltas = {d.path: d for d in report.compare(_result(60.0, 800.0), _result(63.0, 900.0, requests=120))}
    assert deltas["latency_ms.p50"].change == 3.0
    assert deltas["latency_ms.p50"].better is False  # slower
    assert deltas["rps"].better is True  # more throughput
    assert deltas["rps"].percent == 12.5
    assert deltas["requests"].better is None  # a count, neither better nor worse
    assert deltas["success_rate"].better is None  # unchanged


def test_compare_lines_up_levels_by_key_even_when_one_is_missing() -> None:
    a = {"levels": [{"key": "a", "p50": 1.0}, {"key": "b", "p50": 2.0}]}
    b = {"levels": [{"key": "b", "p50": 3.0}]}
    deltas = report.compare(a, b)
    assert [(d.path, d.change) for d in deltas] == [("levels[b].p50", 1.0)]


def test_render_table_lists_changes_only_unless_asked() -> None:
    deltas = report.compare(_result(60.0, 800.0), _result(60.0, 850.0))
    table = report.render_table(deltas, "a.json", "b.json")
    assert "rps" in table and "+6.2%" in table
    assert "latency_ms.p50" not in table
    assert "latency_ms.p50" in report.render_table(deltas, "a", "b", show_all=True)
    assert report.render_table([], "a", "b") == "no differences\n"


def test_endpoint_fills_in_the_chat_path() -> None:
    assert client.endpoint("http://h:1") == "http://h:1/v1/chat/completions"
    assert client.endpoint("http://h:1/") == "http://h:1/v1/chat/completions"
    assert client.endpoint("http://h:1/v1") == "http://h:1/v1/chat/completions"
    assert client.endpoint("http://h:1/v1/messages") == "http://h:1/v1/messages"


def test_request_body_follows_the_endpoint_shape() -> None:
    opts = client.Options(url="x", model="m", stream=True, temperature=0.0, api_key="k")
    chat = client.request_body(opts, "/v1/chat/completions", "hi")
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["stream"] is True and chat["temperature"] == 0.0
    assert client.request_body(opts, "/v1/completions", "hi")["prompt"] == "hi"
    assert client.request_body(opts, "/v1/embeddings", "hi") == {"model": "m", "input": "hi"}
    assert client.headers_for(opts, "/v1/messages")["x-api-key"] == "k"
    assert client.headers_for(opts, "/v1/chat/completions")["authorization"] == "Bearer k"
    plain = client.request_body(client.Options(url="x"), "/v1/chat/completions", "hi")
    assert "temperature" not in plain and "stream" not in plain


def test_summarize_counts_errors_hits_and_ttfb() -> None:
    tally = client.Tally(
        samples=[
            client.Sample(61.0, 30.0, 200, True),
            client.Sample(62.0, 31.0, 200, False),
            client.Sample(5.0, None, 0, False, "ClientConnectorError"),
            client.Sample(70.0, None, 429, False, "http 429"),
        ]
    )
    opts = client.Options(url="x", stream=True, rps=10.0)
    out = client.summarize(opts, "http://x", tally, wall=2.0, cpu_util=0.1, started=0.0)
    assert (out["requests"], out["ok"], out["errors"]) == (4, 2, 2)
    assert out["success_rate"] == 0.5 and out["rps"] == 1.0
    assert out["hits"] == 1 and out["hit_rate"] == 0.5
    assert out["latency_ms"]["p50"] == 61.0 and out["ttfb_ms"]["p50"] == 30.0
    assert out["error_kinds"] == {"ClientConnectorError": 1, "http 429": 1}
    assert out["load"] == {"mode": "open", "rps": 10.0}
    assert "requests 4" in bench.render(out)


def test_register_adds_bench_and_compare() -> None:
    parser = argparse.ArgumentParser(prog="gateway")
    bench.register(parser.add_subparsers(dest="command"))
    run = parser.parse_args(["bench", "--url", "http://h:1", "--rps", "50", "--requests", "10", "--stream"])
    assert (run.url, run.rps, run.requests, run.stream, run.func) == (
        "http://h:1",
        50.0,
        10,
        True,
        bench._run,
    )
    cmp = parser.parse_args(["bench", "compare", "a.json", "b.json"])
    assert (cmp.a, cmp.b, cmp.func) == ("a.json", "b.json", bench._compare)


def test_compare_command_prints_a_table(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    report.write_json(a, _result(60.0, 800.0))
    report.write_json(b, _result(61.0, 700.0))
    parser = argparse.ArgumentParser(prog="gateway")
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "compare", str(a), str(b)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "latency_ms.p50" in out and "-12.5%" in out
