"""Protected spans: the parts of a prompt that compression must return byte for byte.

Fenced code (``` or ~~~), inline code, URLs, double-quoted strings ("..." and “...”) and JSON-like
bracketed regions ({...}, [...]) are protected; everything between them is prose. When a span is
not closed it runs to the end of the text: a lost compression is cheap, a rewritten line of code
or a quoted instruction is not.

Every span starts and ends on a non-word character (see table.py), or for URLs at whitespace, so
splitting the text here never creates a word boundary that the phrase engines would not also see
in the whole text: compressing prose segments one by one equals compressing the text with spans
masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["compress_prose", "protected_spans", "protected_texts", "segments"]

# What opens a span. They are found with str.find (memchr speed), not one alternation regex: the
# re module has no fast path for alternations and would cost ~35 ns per character of prose.
_OPENERS = ("`", "~~~", '"', "“", "{", "[", "://", "www.")
# Inside a bracketed region: brackets, and strings taken whole so a "}" inside one is not a close.
_BRACKET_TOKEN = re.compile(r'[{}\[\]]|"(?:[^"\\]|\\.)*"?', re.DOTALL)
_DQUOTE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BACKTICKS = re.compile(r"`+")
_NON_SPACE = re.compile(r"\S*")


def _span(text: str, opener: str, at: int, floor: int) -> tuple[int, int]:
    """(start, end) of the span whose opener was found at `at`; `floor` is where prose began."""
    n = len(text)
    if opener == "`" and text.startswith("```", at):
        opener = "```"
    if opener in ("```", "~~~"):
        close = text.find(opener, at + 3)
        return at, n if close < 0 else close + 3
    if opener == "`":
        run = _BACKTICKS.match(text, at)
        assert run is not None
        close = text.find(run.group(), run.end())
        return at, n if close < 0 else close + len(run.group())
    if opener == '"':
        quoted = _DQUOTE.match(text, at)
        return at, n if quoted is None else quoted.end()
    if opener == "“":
        close = text.find("”", at + 1)
        return at, n if close < 0 else close + 1
    if opener in "{[":
        depth = 0
        for token in _BRACKET_TOKEN.finditer(text, at):
            t = token.group()
            if t in "{[":
                depth += 1
            elif t in "}]":
                depth -= 1
                if depth == 0:
                    return at, token.end()
        return at, n
    # A URL ("://" or "www.") is its whole whitespace-delimited token, so the span starts after
    # whitespace (or where prose began) and ends at whitespace: never inside a word.
    start = at
    while start > floor and not text[start - 1].isspace():
        start -= 1
    tail = _NON_SPACE.match(text, at)
    assert tail is not None  # \S* always matches
    return start, tail.end()


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) offsets of the protected spans of `text`."""
    spans: list[tuple[int, int]] = []
    nearest = {opener: text.find(opener) for opener in _OPENERS}
    pos = 0
    while True:
        for opener, at in nearest.items():
            if 0 <= at < pos:
                nearest[opener] = text.find(opener, pos)
        found = [(at, opener) for opener, at in nearest.items() if at >= 0]
        if not found:
            return spans
        at, opener = min(found)
        start, end = _span(text, opener, at, pos)
        spans.append((start, end))
        pos = end


def segments(text: str) -> list[tuple[bool, str]]:
    """`text` cut into (protected, piece) pairs whose concatenation is `text`."""
    out: list[tuple[bool, str]] = []
    last = 0
    for start, end in protected_spans(text):
        if start > last:
            out.append((False, text[last:start]))
        out.append((True, text[start:end]))
        last = end
    if last < len(text):
        out.append((False, text[last:]))
    return out


def protected_texts(text: str) -> list[str]:
    """The protected pieces of `text` in order (what tests compare before and after)."""
    return [text[s:e] for s, e in protected_spans(text)]


def compress_prose(text: str, rewrite: Callable[[str], tuple[str, int]]) -> tuple[str, int]:
    """Apply `rewrite` (text -> (text, count)) to the prose between protected spans only."""
    # Most texts have nothing to rewrite: one pass of the (native) rewriter over the whole text says
    # so before the protected spans are looked for. Every protected span starts after whitespace or
    # at a non-word opener, so a phrase found in no prose piece is not in the whole text either.
    whole, count = rewrite(text)
    if count == 0:
        return text, 0
    spans = protected_spans(text)
    if not spans:
        return whole, count
    pieces: list[str] = []
    total = 0
    last = 0
    for start, end in [*spans, (len(text), len(text))]:
        if start > last:
            new, count = rewrite(text[last:start])
            pieces.append(new)
            total += count
        pieces.append(text[start:end])
        last = end
    if total == 0:
        return text, 0
    return "".join(pieces), total
