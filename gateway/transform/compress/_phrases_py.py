"""Pure-Python phrase engine: the twin of native/phrases.pyx, byte-identical output, same names.

One left-to-right pass over the text. At each word start the trie of the phrase table is walked as
far as the text allows; the longest pattern that ends on a word boundary wins, is replaced, and the
scan resumes after it (leftmost-longest, no overlaps). Keep this file and the .pyx in step: any
change to the algorithm goes into both, and tests/unit/test_compress_phrases.py compares them.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.transform.compress import table

__all__ = ["PhraseReplacer", "replace_phrases"]

# ASCII letters of either case, and the space, are the only characters a pattern can contain;
# this maps them to the trie's alphabet. Anything else ends a walk.
_SYMBOL = {c: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "}

# A trie node: child symbol -> node, and under the key None the index of the entry ending here.
_Node = dict[str | None, "_Node | int"]


def _case_variants(replacement: str) -> tuple[str, str, str]:
    # as written (lower case), first letter capitalised, all upper case
    return replacement, replacement[0].upper() + replacement[1:], replacement.upper()


class PhraseReplacer:
    """A compiled phrase table; `replace(text)` returns (new text, number of replacements)."""

    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        word_ascii: str = table.WORD_ASCII,
        nonword_ranges: Sequence[tuple[int, int]] = table.NONWORD_RANGES,
    ) -> None:
        self._root: _Node = {}
        self._variants = [_case_variants(r) for _, r in entries]
        for index, (pattern, _) in enumerate(entries):
            node = self._root
            for ch in pattern:
                child = node.setdefault(ch, {})
                assert isinstance(child, dict)
                node = child
            node[None] = index
        self._word_ascii = frozenset(word_ascii)
        self._nonword_ranges = tuple(nonword_ranges)

    def _is_word(self, ch: str) -> bool:
        code = ord(ch)
        if code < 128:
            return ch in self._word_ascii
        return not any(lo <= code <= hi for lo, hi in self._nonword_ranges)

    def _longest_match(self, text: str, start: int) -> tuple[int, int]:
        """(end, entry index) of the longest whole-word pattern at `start`, or (-1, -1)."""
        node = self._root
        n = len(text)
        best_end, best_entry = -1, -1
        j = start
        while j < n:
            sym = _SYMBOL.get(text[j])
            if sym is None:
                break
            child = node.get(sym)
            if child is None:
                break
            assert isinstance(child, dict)
            node = child
            j += 1
            entry = node.get(None)
            if entry is not None and (j == n or not self._is_word(text[j])):
                assert isinstance(entry, int)
                best_end, best_entry = j, entry
        return best_end, best_entry

    def replace(self, text: str) -> tuple[str, int]:
        pieces: list[str] = []
        last = 0
        i = 0
        n = len(text)
        prev_word = False
        root = self._root
        while i < n:
            ch = text[i]
            sym = _SYMBOL.get(ch)
            if not prev_word and sym is not None and sym in root:
                end, entry = self._longest_match(text, i)
                if end >= 0:
                    pieces.append(text[last:i])
                    pieces.append(self._variants[entry][_case_of(text, i, end)])
                    last = i = end
                    prev_word = True  # a match always ends on a letter
                    continue
            prev_word = self._is_word(ch)
            i += 1
        if not pieces:
            return text, 0
        pieces.append(text[last:])
        return "".join(pieces), len(pieces) // 2


def _case_of(text: str, start: int, end: int) -> int:
    """0: keep the replacement lower case, 1: capitalise it, 2: upper-case it (shouting input)."""
    span = text[start:end]
    if not any("a" <= c <= "z" for c in span):
        return 2
    return 1 if "A" <= text[start] <= "Z" else 0


_REPLACERS = {level: PhraseReplacer(table.entries_for(level)) for level in ("light", "standard")}


def replace_phrases(text: str, level: str = "standard") -> tuple[str, int]:
    """Rewrite verbose phrases in `text` at `level`; returns (new text, replacements made)."""
    try:
        replacer = _REPLACERS[level]
    except KeyError:
        raise ValueError(f"unknown phrase level {level!r}; expected 'light' or 'standard'") from None
    return replacer.replace(text)
