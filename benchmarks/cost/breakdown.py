"""Where the agent corpus's input tokens are, and what each candidate compaction could remove at most.

Counts cl100k tokens of every text the model reads, summed over every request the agents sent (the
history up to each assistant answer, as run.py replays it), by kind of content. Then, for tool
outputs, an upper bound per candidate rewrite, applied blindly to every tool output: several of
these are NOT lossless (marked "lossy"), they are here to show how far even an unsafe rewrite gets.

    .venv/bin/python benchmarks/cost/breakdown.py   # writes benchmarks/cost/results/breakdown.md
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.transform.compress.tokens import count_tokens

HERE = Path(__file__).resolve().parent
_memo: dict[str, int] = {}


def tokens(text: str) -> int:
    n = _memo.get(text)
    if n is None:
        n = _memo[text] = count_tokens(text)
    return n


def kind_of(msg: dict[str, Any], text: str) -> str:
    role: str = msg["role"]
    if role != "tool":
        return role
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            json.loads(stripped)
            return "tool: JSON"
        except ValueError:
            pass
    if re.search(r"^ *\d+\t", text, re.M):
        return "tool: numbered file listing (cat -n)"
    if re.search(r"^[-dl][rwxsStT-]{9}\s", text, re.M):
        return "tool: ls -l listing"
    if re.search(r"^(diff --git|@@ |\+\+\+ |--- )", text, re.M):
        return "tool: diff"
    if re.search(r"Traceback|Error|FAILED|PASSED|passed", text):
        return "tool: test/run log"
    return "tool: other text (grep, find, source)"


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _dedupe_consecutive(text: str) -> str:
    out: list[str] = []
    for line in text.split("\n"):
        if out and line == out[-1] and len(line) > 20:
            continue
        out.append(line)
    return "\n".join(out)


CANDIDATES: dict[str, tuple[str, Callable[[str], str]]] = {
    "ANSI escape codes": ("lossless", lambda t: ANSI.sub("", t)),
    "trailing spaces/tabs": ("lossless outside code and diffs", lambda t: re.sub(r"[ \t]+\n", "\n", t)),
    "blank-line runs (3+ newlines)": ("lossless outside code", lambda t: re.sub(r"\n{3,}", "\n\n", t)),
    "consecutive identical lines (20+ chars)": ("lossless with a count", _dedupe_consecutive),
    "inner space runs -> one space": ("lossy in code, tables", lambda t: re.sub(r"(?<=\S)  +(?=\S)", " ", t)),
    "line-number gutters removed": ("lossy: the agent cites line numbers",
                                    lambda t: re.sub(r"^ *\d+\t", "", t, flags=re.M)),
    "all indentation removed": ("lossy: Python indentation is syntax",
                                lambda t: re.sub(r"^[ \t]+", "", t, flags=re.M)),
}


def as_diff_of_earlier(text: str, earlier: list[str]) -> int | None:
    """Tokens of the cheapest "earlier output K plus this unified diff" form, when under half the text."""
    full, best = tokens(text), None
    if text.count("\n") < 10:
        return None
    for e in earlier:
        diff = "\n".join(difflib.unified_diff(e.split("\n"), text.split("\n"), lineterm="", n=0))
        cost = (10 if e == text else tokens(diff) + 15)  # + a reference like "[output of message K, then:]"
        if cost < 0.5 * full and (best is None or cost < best):
            best = cost
    return best


def texts_of(msg: dict[str, Any]) -> list[str]:
    content = msg.get("content")
    out = [content] if isinstance(content, str) else [
        b["text"] for b in content or [] if isinstance(b, dict) and isinstance(b.get("text"), str)]
    out += [c["function"]["arguments"] for c in msg.get("tool_calls") or []]
    return out


def main() -> int:
    by_kind: Counter[tuple[str, str]] = Counter()
    saved: Counter[tuple[str, str]] = Counter()
    repeated: Counter[str] = Counter()
    near: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for path in sorted((HERE / "corpus").glob("*.json")):
        doc = json.loads(path.read_text())
        corpus = path.name.split("-")[0]
        messages = doc["messages"]
        sends = [k for k in range(1, len(messages) + 1) if k == len(messages) or messages[k]["role"] == "assistant"]
        seen: set[str] = set()
        outputs: list[str] = []
        for i, msg in enumerate(messages):
            weight = sum(1 for k in sends if k > i)  # requests that carry this message
            for text in texts_of(msg):
                n = tokens(text) * weight
                by_kind[(corpus, kind_of(msg, text))] += n
                totals[corpus] += n
                if msg["role"] != "tool":
                    continue
                if len(text) >= 200 and text in seen:
                    repeated[corpus] += (n - 10 * weight)
                seen.add(text)
                cheaper = as_diff_of_earlier(text, outputs)
                if cheaper is not None:
                    near[corpus] += n - cheaper * weight
                outputs.append(text)
                for name, (_, rewrite) in CANDIDATES.items():
                    new = rewrite(text)
                    if new != text:
                        saved[(corpus, name)] += n - tokens(new) * weight
    grand = sum(totals.values())
    lines = ["# Agent corpus: where the input tokens are", "",
             "cl100k tokens of the texts the model reads (message contents and call arguments; not the tool "
             "schemas), summed over every request (each message counted once per request that carries it). "
             "Generated by `benchmarks/cost/breakdown.py`.", "",
             "| corpus | kind | tokens | share of all |", "|---|---|---:|---:|"]
    for (corpus, kind), n in sorted(by_kind.items(), key=lambda kv: (kv[0][0], -kv[1])):
        lines.append(f"| {corpus} | {kind} | {n:,} | {100 * n / grand:.1f}% |")
    lines.append(f"| all | | {grand:,} | 100% |")
    lines += ["", "Upper bound of each rewrite applied to every tool output (tokens saved, share of all tokens):", "",
              "| rewrite | honest? | swe | tau | share of all |", "|---|---|---:|---:|---:|"]
    for name, (honesty, _) in CANDIDATES.items():
        s, t = saved[("swe", name)], saved[("tau", name)]
        lines.append(f"| {name} | {honesty} | {s:,} | {t:,} | {100 * (s + t) / grand:.2f}% |")
    r = repeated["swe"] + repeated["tau"]
    lines.append(f"| identical 200+ char output -> reference | lossless | {repeated['swe']:,} | {repeated['tau']:,} "
                 f"| {100 * r / grand:.2f}% |")
    r = near["swe"] + near["tau"]
    lines.append(f"| identical or near-identical output -> reference + unified diff | lossless, harder to read "
                 f"| {near['swe']:,} | {near['tau']:,} | {100 * r / grand:.2f}% |")
    out = HERE / "results" / "breakdown.md"
    out.write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
