"""Phrase engines: the table case by case, and the native engine against its twin on any text."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transform.compress import table
from gateway.transform.compress.phrases import load_engine

STRICT = os.environ.get("GATEWAY_STRICT_NATIVE") == "1"




def both() -> tuple[ModuleType, ModuleType]:
    try:
        return load_engine("native"), load_engine("python")
    except ImportError as exc:
        if STRICT:
            pytest.fail(f"GATEWAY_STRICT_NATIVE=1 but {exc}")
        pytest.skip(f"{exc} (set GATEWAY_STRICT_NATIVE=1 to make this a failure)")


def test_table_has_enough_patterns() -> None:
    assert len(table.PHRASES) >= 39
    assert len(table.entries_for("light")) < len(table.entries_for("standard"))


@pytest.mark.parametrize(
    ("pattern", "replacement", "level"), table.PHRASES, ids=[e[0] for e in table.PHRASES]
)
def test_every_pattern(engine: ModuleType, pattern: str, replacement: str, level: str) -> None:
    text = f"We {pattern} x."
    assert engine.replace_phrases(text, "standard") == (f"We {replacement} x.", 1)
    light = engine.replace_phrases(text, "light")
    assert light == ((f"We {replacement} x.", 1) if level == "light" else (text, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("In order to win", "To win"),
        ("in order to win", "to win"),
        ("IN ORDER TO WIN", "TO WIN"),
        ("In Order To win", "To win"),
        ("iN ORDER TO win", "to win"),
        ("Due to the fact that x", "Because x"),
        ("HAS A TENDENCY TO", "TENDS TO"),
        ("It is important to note that x", "Note that x"),
    ],
)
def test_case_is_kept(engine: ModuleType, text: str, expected: str) -> None:
    assert engine.replace_phrases(text, "standard")[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "xin order to",  # glued before
        "in order tox",  # glued after
        "in order to_do",
        "in-order-to",
        "re-in order to",
        "in order to-be",
        "'in order to'",  # single-quoted wording is left alone
        "in order toé",
        "éin order to",
        "in  order to",  # two spaces: not the pattern
        "in\norder to",
        "in order",
        "prior to2",
    ],
)
def test_whole_words_only(engine: ModuleType, text: str) -> None:
    assert engine.replace_phrases(text, "standard") == (text, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(in order to)", "(to)"),
        ("in order to.", "to."),
        ("—in order to—", "—to—"),
        ("in order to…", "to…"),
        ("\u00a0in order to\u00a0", "\u00a0to\u00a0"),
        ("「in order to」", "「to」"),
        ("in order to\nin order to", "to\nto"),
        ("prior to prior to", "before before"),
    ],
)
def test_punctuation_is_a_boundary(engine: ModuleType, text: str, expected: str) -> None:
    assert engine.replace_phrases(text, "standard")[0] == expected


def test_longest_match_wins(engine: ModuleType) -> None:
    assert engine.replace_phrases("in spite of the fact that it rained")[0] == "although it rained"
    assert engine.replace_phrases("in spite of the rain", "standard")[0] == "despite the rain"
    assert engine.replace_phrases("the vast majority of", "standard")[0] == "most"
    assert engine.replace_phrases("A large number of the users", "light")[0] == "Many of the users"
    assert engine.replace_phrases("a large number of users", "light")[0] == "many users"


def test_counts_and_identity(engine: ModuleType) -> None:
    text = "Nothing to see here, in order."
    out, count = engine.replace_phrases(text, "standard")
    assert out is text and count == 0  # no match returns the same object, no copy
    assert engine.replace_phrases("prior to, subsequent to, in order to", "light")[1] == 3
    assert engine.replace_phrases("", "light") == ("", 0)


def test_unknown_level(engine: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown phrase level"):
        engine.replace_phrases("in order to", "heavy")


def test_large_input_from_threads(engine: ModuleType) -> None:
    # Large inputs take the nogil path in the native engine; results must not depend on threads.
    text = "Prior to launch, in order to win, we ship. Ünïcödé — “ok” " * 4000
    expected = engine.replace_phrases(text, "standard")
    results: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda: results.append(engine.replace_phrases(text, "standard")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4
    assert expected[1] == 8000


_FRAGMENTS = sorted({w for p, _, _ in table.PHRASES for w in p.split()} | {p for p, _, _ in table.PHRASES})
_GLUE = [" ", " ", "  ", "\n", ".", ",", "-", "'", "’", "“", "”", '"', "`", "```", "{", "}", "[", "]", "—",
         "\u00a0", "é", "日本", "😀", "_", "0", "http://x.io/a", "I", "a"]
_piece = st.one_of(
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(_FRAGMENTS).map(str.upper),
    st.sampled_from(_FRAGMENTS).map(str.capitalize),
    st.sampled_from(_GLUE),
    st.text(max_size=6),
)
prose = st.lists(_piece, max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=prose, level=st.sampled_from(["light", "standard"]))
def test_native_and_twin_agree(text: str, level: str) -> None:
    native, python = both()
    assert native.replace_phrases(text, level) == python.replace_phrases(text, level)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), level=st.sampled_from(["light", "standard"]))
def test_native_and_twin_agree_on_any_unicode(text: str, level: str) -> None:
    native, python = both()
    assert native.replace_phrases(text, level) == python.replace_phrases(text, level)


@settings(max_examples=50, deadline=None)
@given(text=prose)
def test_agree_on_large_inputs(text: str) -> None:
    native, python = both()
    big = (text + " in order to ") * (5000 // (len(text) + 13) + 1)  # past the nogil threshold
    assert native.replace_phrases(big) == python.replace_phrases(big)


@pytest.mark.parametrize(("env", "expected"), [({"GATEWAY_NO_EXTENSIONS": "1"}, "python"), ({}, "native")])
def test_auto_choice(env: dict[str, str], expected: str) -> None:
    if expected == "native":
        both()  # fails under strict, skips otherwise, when the extension is not built
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    code = "from gateway.transform.compress.phrases import IMPLEMENTATION as I; print(I)"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize(("strict", "expected"), [("1", "ImportError"), ("0", "python")])
def test_missing_extension(strict: str, expected: str) -> None:
    # sys.modules[name] = None makes importing the extension fail as if it were not built.
    code = (
        "import sys; sys.modules['gateway.transform.compress._phrases_c'] = None\n"
        "try:\n    from gateway.transform.compress.phrases import IMPLEMENTATION as I; print(I)\n"
        "except ImportError as e:\n    print('ImportError', e)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "GATEWAY_STRICT_NATIVE": strict},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == expected
    if strict == "1":
        assert "GATEWAY_STRICT_NATIVE=1" in out.stdout and "build_ext" in out.stdout
