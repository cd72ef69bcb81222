"""Semantic dedup: a long paragraph repeated across a conversation is sent once.

Later copies become a short reference to the first, e.g. "[same as the document in message 2,
paragraph 1]". Exact copies are found by an xxhash of the whitespace-normalised text (and then
compared, so a hash collision cannot merge two different paragraphs); near copies by cosine
similarity of embeddings from an optional `embed(list[str]) -> ndarray` of L2-normalised rows.

Only the later copy is ever rewritten, so what a conversation's earlier turns look like does not
depend on later ones: the request prefix stays stable as a conversation grows, which keeps the
provider's prompt cache warm. Paragraphs touching a protected span are never candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import xxhash

from gateway.transform.compress.protect import protected_spans

__all__ = ["Embedder", "dedup_units"]

Embedder = Callable[[list[str]], Any]  # returns an (n, d) numpy array of L2-normalised rows

# A paragraph ends at a blank line.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_WORD = re.compile(r"\w+")

# MiniLM reads only the first 256 tokens (about 1,000 characters), so two long paragraphs that
# share an opening look identical to it. A near copy must therefore also share most of its words
# and be of similar length before it is replaced.
_MIN_WORD_JACCARD = 0.8
_MIN_LENGTH_RATIO = 0.8


class _Paragraph:
    __slots__ = ("end", "key", "locator", "replacement", "start", "unit")

    def __init__(self, unit: int, start: int, end: int, locator: str, key: str) -> None:
        self.unit = unit
        self.start = start  # offsets of the stripped paragraph in its unit's text
        self.end = end
        self.locator = locator
        self.key = key  # whitespace-normalised text
        self.replacement: str | None = None


def _candidates(units: Sequence[tuple[str, str]], min_chars: int) -> list[_Paragraph]:
    """Long, fully unprotected paragraphs in conversation order, each with its locator."""
    numbers: dict[str, int] = {}
    found: list[_Paragraph] = []
    for index, (label, text) in enumerate(units):
        spans: list[tuple[int, int]] | None = None  # computed once a long paragraph needs them
        breaks = list(_PARAGRAPH_BREAK.finditer(text))
        starts = [0, *(m.end() for m in breaks)]
        ends = [*(m.start() for m in breaks), len(text)]
        for raw_start, raw_end in zip(starts, ends, strict=True):
            piece = text[raw_start:raw_end]
            if not piece.strip():
                continue
            numbers[label] = number = numbers.get(label, 0) + 1
            start = raw_start + len(piece) - len(piece.lstrip())
            end = raw_start + len(piece.rstrip())
            if end - start < min_chars:
                continue
            if spans is None:
                spans = protected_spans(text)
            if any(s < end and start < e for s, e in spans):
                continue
            locator = f"{label}, paragraph {number}"
            found.append(_Paragraph(index, start, end, locator, " ".join(text[start:end].split())))
    return found


def _mark_exact(paragraphs: list[_Paragraph]) -> list[_Paragraph]:
    """Mark exact later copies; returns the first occurrences (the near-dup candidates)."""
    first: dict[int, _Paragraph] = {}
    originals: list[_Paragraph] = []
    for p in paragraphs:
        digest = xxhash.xxh3_64_intdigest(p.key.encode())
        seen = first.get(digest)
        if seen is not None and seen.key == p.key:
            p.replacement = f"[same as the document in {seen.locator}]"
        else:
            first.setdefault(digest, p)
            originals.append(p)
    return originals


def _lexically_close(a: str, b: str) -> bool:
    if min(len(a), len(b)) < _MIN_LENGTH_RATIO * max(len(a), len(b)):
        return False
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(wa & wb) >= _MIN_WORD_JACCARD * len(wa | wb)


def _mark_near(originals: list[_Paragraph], embed: Embedder, threshold: float) -> None:
    if len(originals) < 2:
        return
    vectors = embed([p.key for p in originals])
    similarity = vectors @ vectors.T
    for j in range(1, len(originals)):
        best, best_score = None, threshold
        for i in range(j):
            if originals[i].replacement is not None:
                continue  # refer only to text that is still there
            score = float(similarity[i, j])
            if score >= best_score and _lexically_close(originals[i].key, originals[j].key):
                best, best_score = originals[i], score
        if best is not None:
            originals[j].replacement = f"[nearly the same as the document in {best.locator}]"


def dedup_units(
    units: Sequence[tuple[str, str]],
    *,
    min_chars: int = 400,
    embed: Embedder | None = None,
    near_threshold: float = 0.95,
) -> tuple[list[str], int]:
    """Dedup long paragraphs across `units`, (label, text) pairs in conversation order.

    `label` names where a text sits ("message 2", "the system prompt"); paragraphs are numbered
    per label. Returns the new texts (unchanged ones are the same objects) and how many paragraphs
    were replaced. Near copies are looked for only when `embed` is given.
    """
    if sum(len(text) for _, text in units) < 2 * min_chars:
        return [text for _, text in units], 0  # no room for a repeated block: the common case, free
    paragraphs = _candidates(units, min_chars)
    if not paragraphs:
        return [text for _, text in units], 0
    originals = _mark_exact(paragraphs)
    if embed is not None:
        _mark_near(originals, embed, near_threshold)
    replaced = [p for p in paragraphs if p.replacement is not None]
    texts = [text for _, text in units]
    # Rewrite back to front so earlier offsets in the same unit stay valid.
    for p in sorted(replaced, key=lambda p: (p.unit, p.start), reverse=True):
        text = texts[p.unit]
        texts[p.unit] = text[: p.start] + str(p.replacement) + text[p.end :]
    return texts, len(replaced)
