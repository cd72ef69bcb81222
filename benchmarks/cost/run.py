"""`make bench-cost`: what each cost layer saves on real multi-turn agent traffic, billed by the mock.

Every conversation of benchmarks/cost/corpus/ is replayed request by request (the history up to each
assistant answer, as the agent sent it) through a running gateway (`gateway serve`, two workers,
models pointing at `gateway mock`, response cache off) with the layers switched by the opt-out
headers: none, compaction + phrases, prompt caching, all. Three client paths: native Anthropic
/v1/messages, OpenAI chat translated to an Anthropic deployment, OpenAI chat to an OpenAI one.
The mock bills as the providers do (gateway/mock/caching.py) and records the usage of every
request; its caches are emptied before each replay so no variant warms another.

`--in-process` adds the same replays with the layers applied by the library itself, the way the
transform stage calls them once wired (compress at the family's level, then `mark_conversation`
for every Anthropic body), sent straight to the mock: the figures the wiring this branch asks for
will give. The replay also checks, on the bodies the mock received, that earlier turns were re-sent
byte for byte (prefix stability) and that no protected span of prose changed.

Writes benchmarks/cost/results/cost.{md,json,png}; input tokens only (the mock's answers are not
the corpus's), dollars at list prices (gateway/costs/prices.py).

    python -m benchmarks.cost.run [--in-process] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.costs.prices import default_table
from gateway.mock.caching import anthropic_blocks
from gateway.providers.translate import chat_to_anthropic
from gateway.transform import promptcache as pc
from gateway.transform.compress import compress_anthropic_messages, compress_openai_chat
from gateway.transform.compress.protect import protected_texts
from gateway.transform.compress.tokens import count_tokens

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
RESULTS = HERE / "results"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_MODEL = "gpt-4o"
VARIANTS: dict[str, dict[str, str]] = {
    "none": {"x-gateway-compression": "off", "x-gateway-prompt-cache": "off"},
    "compaction+phrases": {"x-gateway-prompt-cache": "off"},
    "prompt caching": {"x-gateway-compression": "off"},
    "all layers": {},
}
# path name -> (client endpoint, gateway model, upstream model, provider family)
PATHS: dict[str, tuple[str, str, str, str]] = {
    "anthropic native": ("/v1/messages", "claude-agent", ANTHROPIC_MODEL, "anthropic"),
    "anthropic via chat": ("/v1/chat/completions", "claude-chat", ANTHROPIC_MODEL, "anthropic"),
    "openai chat": ("/v1/chat/completions", "gpt-agent", OPENAI_MODEL, "openai"),
}
LEVELS = {"anthropic": "standard", "openai": "light"}  # the families' default levels (settings.py)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], port: int, log: Path, ready: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args, "--port", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def gateway_config(mock_url: str, workdir: Path) -> Path:
    cfg = {
        "auth": {"enabled": False},
        "retries": {"attempts": 0},
        "cache": {"enabled": False},  # every request reaches the transforms and the provider
        "store": {"embedded_path": str(workdir / "store.db")},
        "providers": {"claude": {"kind": "anthropic", "base_url": mock_url},
                      "openai": {"kind": "openai", "base_url": mock_url + "/v1"}},
        "models": [
            {"name": "claude-agent", "deployments": [{"provider": "claude", "model": ANTHROPIC_MODEL}]},
            {"name": "claude-chat", "deployments": [{"provider": "claude", "model": ANTHROPIC_MODEL}]},
            {"name": "gpt-agent", "deployments": [{"provider": "openai", "model": OPENAI_MODEL}]},
        ],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def requests_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat bodies the agent sent: the history up to each assistant answer."""
    messages = doc["messages"]
    return [{"tools": doc["tools"], "messages": messages[:k], "max_tokens": 64}
            for k in range(1, len(messages) + 1) if k == len(messages) or messages[k]["role"] == "assistant"]


def client_body(path: str, chat: dict[str, Any]) -> dict[str, Any]:
    endpoint, model, _, _ = PATHS[path]
    if endpoint == "/v1/messages":
        return chat_to_anthropic(chat, model)  # what a native client would have sent
    return {**chat, "model": model}


def in_process(path: str, variant: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(mock endpoint, body) as the wired transform stage sends it: compress, translate, mark."""
    endpoint, _, upstream, family = PATHS[path]
    headers = VARIANTS[variant]
    compress = headers.get("x-gateway-compression") != "off"
    mark = headers.get("x-gateway-prompt-cache") != "off"
    level = LEVELS[family]
    if endpoint == "/v1/messages":
        body = {**body, "model": upstream}
        if compress:
            body = compress_anthropic_messages(body, level, count=False).body
    else:
        if compress:
            body = compress_openai_chat(body, level, count=False).body
        if family == "openai":
            return "/v1/chat/completions", {**body, "model": upstream}
        body = chat_to_anthropic(body, upstream)
    if mark:
        body = pc.mark_conversation(body, upstream).body
    return "/v1/messages", body


def billed(usage: dict[str, Any]) -> dict[str, int]:
    """Input tokens split as billed: plain, cache writes, cache reads."""
    if "prompt_tokens" in usage:
        return {"input": usage["prompt_tokens"] - usage["cached_tokens"], "write": 0, "read": usage["cached_tokens"]}
    return {"input": usage["input_tokens"], "write": usage["cache_creation_input_tokens"],
            "read": usage["cache_read_input_tokens"]}


def usd(tokens: dict[str, int], model: str) -> float:
    found = default_table().lookup(model)
    assert found is not None, model
    p = found[1].resolved()
    assert p.cached_input is not None and p.cache_write is not None
    return (tokens["input"] * p.input + tokens["write"] * p.cache_write + tokens["read"] * p.cached_input) / 1e6


_SKIP_KEYS = frozenset({"id", "tool_call_id", "tool_use_id", "type", "role", "model", "cache_control", "name"})
_token_memo: dict[str, int] = {}


def _texts(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    if isinstance(node, dict):
        return [t for k, v in node.items() if k not in _SKIP_KEYS for t in _texts(v)]
    return []


def text_tokens(body: dict[str, Any]) -> int:
    """cl100k tokens of the strings the model reads in a body (system, messages, tool texts; not tools)."""
    total = 0
    for text in _texts([body.get("system"), body.get("messages")]):
        n = _token_memo.get(text)
        if n is None:
            n = _token_memo[text] = count_tokens(text)
        total += n
    return total


def stability_breaks(bodies: list[dict[str, Any]], anthropic: bool) -> int:
    """How many requests re-sent an earlier turn differently from the request before."""
    breaks = 0
    previous: list[bytes] = []
    for body in bodies:
        blocks = ([raw for raw, _ in anthropic_blocks(body)] if anthropic
                  else [json.dumps(m).encode() for m in body.get("messages") or []])
        if blocks[: len(previous)] != previous:
            breaks += 1
        previous = blocks
    return breaks


def protected_changes(doc: dict[str, Any], bodies: list[dict[str, Any]]) -> int:
    """Protected spans of prose (OpenAI chat bodies) that differ from the corpus's, over all requests."""
    changes = 0
    for body in bodies:
        for before, after in zip(doc["messages"], body.get("messages") or [], strict=False):
            if before["role"] == "tool" or not isinstance(before.get("content"), str):
                continue
            if not isinstance(after.get("content"), str) or "[same as the document in" in after["content"]:
                continue
            changes += protected_texts(before["content"]) != protected_texts(after["content"])
    return changes


Send = Callable[[str, str, dict[str, Any]], None]


def replay(mock: httpx.Client, send: Send, corpus: list[tuple[str, dict[str, Any]]], mode: str) -> list[dict[str, Any]]:
    rows = []
    for path in PATHS:
        _, _, upstream, family = PATHS[path]
        for variant in VARIANTS:
            for name, doc in corpus:
                mock.delete("/_mock/caches")
                mock.delete("/_mock/requests")
                chats = requests_of(doc)
                for chat in chats:
                    send(path, variant, client_body(path, chat))
                got = mock.get("/_mock/requests").json()
                assert len(got) == len(chats), f"{name} {path} {variant}: the mock saw {len(got)} of {len(chats)}"
                bodies = [r["body"] for r in got]
                turns = [billed(r["usage"]) for r in got]
                rows.append({
                    "mode": mode, "path": path, "variant": variant, "conversation": name, "family": family,
                    "turns": turns, "usd": [usd(t, upstream) for t in turns],
                    "stability_breaks": stability_breaks(bodies, family == "anthropic"),
                    "protected_changes": protected_changes(doc, bodies) if path == "openai chat" else 0,
                    "text_tokens": sum(text_tokens(b) for b in bodies),
                })
            print(f"  {mode:10} {path:20} {variant:20} done", file=sys.stderr)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["mode"], r["path"], r["variant"]) for r in rows},
                  key=lambda k: (k[0], list(PATHS).index(k[1]), list(VARIANTS).index(k[2])))
    for mode, path, variant in keys:
        group = [r for r in rows if (r["mode"], r["path"], r["variant"]) == (mode, path, variant)]
        later = [t for r in group for t in r["turns"][1:]]
        total = sum(t["input"] + t["write"] + t["read"] for r in group for t in r["turns"])
        out.append({
            "mode": mode, "path": path, "variant": variant,
            "prompt_tokens": total,
            "billed_input": sum(t["input"] for r in group for t in r["turns"]),
            "cache_write": sum(t["write"] for r in group for t in r["turns"]),
            "cache_read": sum(t["read"] for r in group for t in r["turns"]),
            "read_share_turns_2plus": sum(t["read"] for t in later) / max(1, sum(
                t["input"] + t["write"] + t["read"] for t in later)),
            "usd": sum(sum(r["usd"]) for r in group),
            "text_tokens": sum(r["text_tokens"] for r in group),
            "stability_breaks": sum(r["stability_breaks"] for r in group),
            "protected_changes": sum(r["protected_changes"] for r in group),
        })
    for row in out:
        base = next(b for b in out if (b["mode"], b["path"], b["variant"]) == (row["mode"], row["path"], "none"))
        row["tokens_vs_none"] = row["prompt_tokens"] / base["prompt_tokens"] - 1
        row["usd_vs_none"] = row["usd"] / base["usd"] - 1
        row["text_tokens_vs_none"] = row["text_tokens"] / base["text_tokens"] - 1
    return out


def per_turn(rows: list[dict[str, Any]], mode: str, path: str, variant: str) -> list[float]:
    """Mean input dollars at each turn index over the conversations that reach it."""
    group = [r for r in rows if (r["mode"], r["path"], r["variant"]) == (mode, path, variant)]
    longest = max(len(r["usd"]) for r in group)
    means = []
    for t in range(longest):
        vals = [r["usd"][t] for r in group if len(r["usd"]) > t]
        means.append(sum(vals) / len(vals))
    return means


def write_markdown(summary: list[dict[str, Any]], rows: list[dict[str, Any]], corpus: list[Any]) -> str:
    lines = ["# Cost layers on real agent conversations", "",
             f"{len(corpus)} conversations from benchmarks/cost/corpus/ ({sum(len(requests_of(d)) for _, d in corpus)}"
             " requests each way), billed by `gateway mock`'s simulated provider caches; input tokens only,"
             f" list prices ({ANTHROPIC_MODEL}, {OPENAI_MODEL}). Generated by `make bench-cost`.", "",
             "Prompt tokens are the mock's (bytes / 4 of the JSON); text tokens are cl100k tokens of the"
             " strings the model reads, summed over every request (what compaction and phrases are judged on).", "",
             "| mode | path | layers | prompt tokens | plain input | cache writes | cache reads |"
             " reads, turns 2+ | input $ | $ vs none | text tokens | vs none | prefix breaks | protected changes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['mode']} | {s['path']} | {s['variant']} | {s['prompt_tokens']:,} | "
                     f"{s['billed_input']:,} | {s['cache_write']:,} | "
                     f"{s['cache_read']:,} | {s['read_share_turns_2plus']:.1%} | {s['usd']:.4f} | "
                     f"{s['usd_vs_none']:+.1%} | {s['text_tokens']:,} | {s['text_tokens_vs_none']:+.1%} | "
                     f"{s['stability_breaks']} | {s['protected_changes']} |")
    lines += ["", "Per corpus (all layers vs none, input $):", "",
              "| mode | path | corpus | none $ | all layers $ | saved | text tokens saved by compaction+phrases |",
              "|---|---|---|---:|---:|---:|---:|"]
    for mode in sorted({r["mode"] for r in rows}):
        for path in PATHS:
            for prefix in ("swe", "tau"):
                def total(variant: str, key: str = "usd", mode: str = mode, path: str = path,
                          prefix: str = prefix) -> float:
                    return sum(sum(r[key]) if key == "usd" else r[key] for r in rows
                               if (r["mode"], r["path"], r["variant"]) == (mode, path, variant)
                               and r["conversation"].startswith(prefix))
                none, every = total("none"), total("all layers")
                plain, packed = total("none", "text_tokens"), total("compaction+phrases", "text_tokens")
                if none:
                    lines.append(f"| {mode} | {path} | {prefix} | {none:.4f} | {every:.4f} | {1 - every / none:.1%}"
                                 f" | {1 - packed / plain:.1%} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(len(modes), len(PATHS), figsize=(5 * len(PATHS), 3.6 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for j, path in enumerate(PATHS):
            ax = axes[i][j]
            for variant in VARIANTS:
                series = per_turn(rows, mode, path, variant)
                ax.plot(range(1, len(series) + 1), [v * 100 for v in series], label=variant)
            ax.set_title(f"{path} ({mode})", fontsize=10)
            ax.set_xlabel("turn")
            ax.set_ylabel("input cost per turn (US cents, mean)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--in-process", action="store_true", help="also replay with the layers applied in process")
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations of each corpus")
    args = parser.parse_args()
    corpus = [(p.stem, json.loads(p.read_text())) for p in sorted(CORPUS.glob("*.json"))]
    if args.limit:
        corpus = [c for prefix in ("swe", "tau") for c in [c for c in corpus if c[0].startswith(prefix)][:args.limit]]
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mock_port, gw_port = free_port(), free_port()
        mock = start(["mock", "--latency-ms", "0"], mock_port, work / "mock.log", "/healthz")
        mock_url = f"http://127.0.0.1:{mock_port}"
        try:
            gw = start(["serve", "--config", str(gateway_config(mock_url, work)), "--workers", "2"], gw_port,
                       work / "gateway.log", "/readyz")
            try:
                with httpx.Client(base_url=mock_url, timeout=30) as mc, \
                        httpx.Client(base_url=f"http://127.0.0.1:{gw_port}", timeout=60) as gc:
                    def via_gateway(path: str, variant: str, body: dict[str, Any]) -> None:
                        resp = gc.post(PATHS[path][0], json=body, headers=VARIANTS[variant])
                        resp.raise_for_status()

                    def direct(path: str, variant: str, body: dict[str, Any]) -> None:
                        endpoint, sent = in_process(path, variant, body)
                        mc.post(endpoint, json=sent).raise_for_status()

                    rows = replay(mc, via_gateway, corpus, "gateway")
                    if args.in_process:
                        rows += replay(mc, direct, corpus, "in-process")
            finally:
                stop(gw)
        finally:
            stop(mock)
    summary = summarise(rows)
    turns = {f"{m}|{p}|{v}": [round(x, 6) for x in per_turn(rows, m, p, v)]
             for m, p, v in {(r["mode"], r["path"], r["variant"]) for r in rows}}
    (RESULTS / "cost.json").write_text(json.dumps({"summary": summary, "usd_per_turn": turns}, indent=1) + "\n")
    md = write_markdown(summary, rows, corpus)
    (RESULTS / "cost.md").write_text(md)
    chart(rows, RESULTS / "cost.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
