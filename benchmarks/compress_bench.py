"""Benchmark of the phrase engines: native extension vs pure-Python twin, and corpus reduction.

    .venv/bin/python benchmarks/compress_bench.py [--repeat 15]

Prompts are built from the prose of tests/data/prompts/corpus.jsonl: a 2 KB system prompt and a
100 KB prompt. Timings are the median of `--repeat` timeit runs at the "standard" level (the
whole table). Exits 1 unless the native engine is at least 10x faster than the twin on 100 KB and
under 50 microseconds on 2 KB (issue 7), so CI can run it as a check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.transform.compress import compress_text  # noqa: E402
from gateway.transform.compress.phrases import load_engine  # noqa: E402
from gateway.transform.compress.tokens import count_tokens, tokenizer_name  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "prompts" / "corpus.jsonl"
MIN_SPEEDUP = 10.0
MAX_2KB_MICROSECONDS = 50.0


def corpus() -> list[dict[str, object]]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prose_prompt(size: int) -> str:
    """Prose-heavy corpus texts joined by blank lines, cut at a paragraph to about `size` chars."""
    texts = [str(r["text"]) for r in corpus() if r["prose_heavy"]]
    out: list[str] = []
    length = 0
    while length < size:
        for text in texts:
            out.append(text)
            length += len(text) + 2
            if length >= size:
                break
    return "\n\n".join(out)[:size]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls per run for at least 0.2 s
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def reduction(level: str) -> float:
    ratios = []
    for record in corpus():
        if record["prose_heavy"]:
            text = str(record["text"])
            before = count_tokens(text)
            ratios.append(100.0 * (before - count_tokens(compress_text(text, level)[0])) / before)
    return statistics.fmean(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    try:
        native = load_engine("native")
    except ImportError as exc:
        print(f"FAIL: {exc}")
        return 1
    python = load_engine("python")

    ok = True
    print(f"{'prompt':>8} {'native':>12} {'python':>12} {'speedup':>8}")
    for label, size in (("2 KB", 2048), ("100 KB", 100_000)):
        text = prose_prompt(size)
        assert native.replace_phrases(text) == python.replace_phrases(text)
        t_native = median_seconds(partial(native.replace_phrases, text, "standard"), args.repeat)
        t_python = median_seconds(partial(python.replace_phrases, text, "standard"), args.repeat)
        speedup = t_python / t_native
        print(f"{label:>8} {t_native * 1e6:>10.1f}us {t_python * 1e6:>10.1f}us {speedup:>7.1f}x")
        if label == "2 KB" and t_native * 1e6 >= MAX_2KB_MICROSECONDS:
            print(f"FAIL: native takes {t_native * 1e6:.1f}us on 2 KB (limit {MAX_2KB_MICROSECONDS}us)")
            ok = False
        if label == "100 KB" and speedup < MIN_SPEEDUP:
            print(f"FAIL: native is only {speedup:.1f}x faster on 100 KB (need {MIN_SPEEDUP}x)")
            ok = False

    # For context: the whole text path (protected spans + phrases) with the auto-chosen engine.
    text = prose_prompt(2048)
    t_text = median_seconds(lambda: compress_text(text, "standard"), args.repeat)
    print(f"compress_text on 2 KB (spans + phrases): {t_text * 1e6:.1f}us")
    print(f"mean token reduction on prose-heavy corpus prompts ({tokenizer_name()}): "
          f"light {reduction('light'):.2f}%, standard {reduction('standard'):.2f}%")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
