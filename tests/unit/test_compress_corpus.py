"""The prompt corpus (tests/data/prompts/corpus.jsonl): reduction on prose, nothing changed in spans.

Run with `-s` to see the measured mean reduction per level; benchmarks/compress_bench.py prints it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.transform.compress import compress_text
from gateway.transform.compress.phrases import load_engine
from gateway.transform.compress.protect import compress_prose, protected_texts
from gateway.transform.compress.tokens import count_tokens

CORPUS = Path(__file__).resolve().parent.parent / "data" / "prompts" / "corpus.jsonl"
STRICT = os.environ.get("GATEWAY_STRICT_NATIVE") == "1"


def load_corpus() -> list[dict[str, Any]]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_corpus_shape() -> None:
    records = load_corpus()
    assert len(records) >= 200
    assert len({r["id"] for r in records}) == len(records)
    kinds = {r["kind"] for r in records}
    assert {"system_prose", "code", "json", "url", "quote", "non_english"} <= kinds
    assert sum(r["prose_heavy"] for r in records) >= 80


@pytest.mark.parametrize("name", ["native", "python"])
@pytest.mark.parametrize("level", ["light", "standard"])
def test_protected_spans_unchanged_and_engines_agree(name: str, level: str) -> None:
    try:
        engine = load_engine(name)
        reference = load_engine("python")
    except ImportError as exc:
        if STRICT:
            pytest.fail(f"GATEWAY_STRICT_NATIVE=1 but {exc}")
        pytest.skip(f"{exc} (set GATEWAY_STRICT_NATIVE=1 to make this a failure)")
    for record in load_corpus():
        text = record["text"]
        out, _ = compress_prose(text, lambda prose: engine.replace_phrases(prose, level))
        assert protected_texts(out) == protected_texts(text), record["id"]
        expected, _ = compress_prose(text, lambda prose: reference.replace_phrases(prose, level))
        assert out == expected, record["id"]


def mean_reduction(level: str) -> tuple[float, int, int]:
    """Mean per-prompt token reduction (%) over prose-heavy prompts, and total tokens before/after."""
    ratios: list[float] = []
    before_total = after_total = 0
    for record in load_corpus():
        if not record["prose_heavy"]:
            continue
        before = count_tokens(record["text"])
        after = count_tokens(compress_text(record["text"], level)[0])
        ratios.append(100.0 * (before - after) / before)
        before_total += before
        after_total += after
    return sum(ratios) / len(ratios), before_total, after_total


@pytest.mark.parametrize("level", ["light", "standard"])
def test_mean_reduction_on_prose(level: str, record_property: Any) -> None:
    mean, before, after = mean_reduction(level)
    record_property(f"mean_reduction_{level}_percent", round(mean, 2))
    print(f"\n{level}: mean token reduction on prose-heavy prompts {mean:.2f}% ({before} -> {after} tokens)")
    assert mean > 0
    assert after < before


def test_standard_saves_more_than_light() -> None:
    assert mean_reduction("standard")[0] > mean_reduction("light")[0]
