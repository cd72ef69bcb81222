"""Protected spans: what they cover, and that compression returns them byte for byte."""

from __future__ import annotations

import itertools
import os
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transform.compress import table
from gateway.transform.compress.phrases import load_engine
from gateway.transform.compress.protect import compress_prose, protected_spans, protected_texts, segments

STRICT = os.environ.get("GATEWAY_STRICT_NATIVE") == "1"




def compress(engine: ModuleType, text: str, level: str = "standard") -> str:
    return compress_prose(text, lambda prose: engine.replace_phrases(prose, level))[0]


@pytest.mark.parametrize(
    ("text", "protected"),
    [
        ("a ```x in order to y``` b", ["```x in order to y```"]),
        ("~~~\nin order to\n~~~", ["~~~\nin order to\n~~~"]),
        ("run `in order to` now", ["`in order to`"]),
        ("run ``a ` in order to`` now", ["``a ` in order to``"]),
        ('say "in order to" now', ['"in order to"']),
        ('say "a \\" in order to" now', ['"a \\" in order to"']),
        ("say “in order to” now", ["“in order to”"]),
        ('data {"a": [1, "}"], "b": {"c": 2}} end', ['{"a": [1, "}"], "b": {"c": 2}}']),
        ("list [1, [2, 3]] end", ["[1, [2, 3]]"]),
        ("see https://x.io/in_order_to?q=1 now", ["https://x.io/in_order_to?q=1"]),
        ("see www.example.com/path now", ["www.example.com/path"]),
        ("git+ssh://host/repo.git is a URL too", ["git+ssh://host/repo.git"]),
        ("open ```never closed in order to", ["```never closed in order to"]),
        ('open "never closed in order to', ['"never closed in order to']),
        ("open {never closed in order to", ["{never closed in order to"]),
        ("plain prose in order to win", []),
    ],
)
def test_spans(text: str, protected: list[str]) -> None:
    assert protected_texts(text) == protected
    assert "".join(piece for _, piece in segments(text)) == text


def test_prose_between_spans_is_compressed(engine: ModuleType) -> None:
    text = 'In order to run `in order to`, see "in order to" at https://a.io in order to {"in order to": 1}'
    out = compress(engine, text)
    assert out == 'To run `in order to`, see "in order to" at https://a.io to {"in order to": 1}'


def test_spans_are_sorted_and_disjoint() -> None:
    text = '`a` "b" {c} [d] https://e.f ```g``` “h”'
    spans = protected_spans(text)
    assert spans == sorted(spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert len(spans) == 7


_WORDS = sorted({w for p, _, _ in table.PHRASES for w in p.split()} | {p for p, _, _ in table.PHRASES})
_SPECIAL = ["`", "```", "~~~", '"', "\\", "“", "”", "{", "}", "[", "]", ":", ",", "https://", "www.", "/",
            " ", " ", "\n", "\n\n", "'", "é", "—"]
_text = st.lists(
    st.one_of(st.sampled_from(_WORDS), st.sampled_from(_WORDS).map(str.title), st.sampled_from(_SPECIAL),
              st.text(max_size=4)),
    max_size=80,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_text, level=st.sampled_from(["light", "standard"]))
def test_protected_spans_come_out_identical(engine: ModuleType, text: str, level: str) -> None:
    out = compress(engine, text, level)
    assert protected_texts(out) == protected_texts(text)


@settings(max_examples=300, deadline=None)
@given(text=_text)
def test_segmented_equals_twin(text: str) -> None:
    try:
        native = load_engine("native")
    except ImportError as exc:
        if STRICT:
            pytest.fail(f"GATEWAY_STRICT_NATIVE=1 but {exc}")
        pytest.skip(str(exc))
    assert compress(native, text) == compress(load_engine("python"), text)
