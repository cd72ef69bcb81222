"""The phrase table and word-character rules: the one source of truth for both phrase engines.

The native engine (`_phrases_c`) and its pure-Python twin (`_phrases_py`) both build their trie from
`entries_for(level)` and classify characters with `WORD_ASCII` and `NONWORD_RANGES`, so the two can
only disagree through a bug in one of them, which the property tests look for.

Rules the engines rely on (checked at import by `_validate`):
- a pattern is lower-case ASCII words separated by single spaces; it matches case-insensitively and
  only whole words (the characters on either side are not word characters);
- a replacement is non-empty, so no rewrite ever leaves a double space behind.
"""

from __future__ import annotations

import re

LEVELS = ("off", "light", "standard")

# Word characters in ASCII. The hyphen and apostrophe count as word characters on purpose: a match
# never starts or ends inside "state-of-the-art" or a 'single-quoted phrase', which keeps
# compounds and quoted wording intact.
WORD_ASCII = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-'"

# Above ASCII every character is a word character except these ranges (inclusive), so an accented
# or CJK letter glued to a phrase blocks the match, while typographic punctuation (em dash,
# ellipsis, curly double quotes, no-break space, CJK punctuation) does not. U+2018/U+2019 (curly
# single quotes) are left out of the ranges: like the ASCII apostrophe they count as word
# characters.
NONWORD_RANGES: tuple[tuple[int, int], ...] = (
    (0x00A0, 0x00A0),
    (0x2000, 0x2017),
    (0x201A, 0x206F),
    (0x3000, 0x303F),
)

# (pattern, replacement, level). "light" holds rewrites that keep meaning and grammar in every
# context we could think of; "standard" adds ones that are right in prose nearly always but can
# shift a nuance ("as well as" -> "and") or read oddly in rare constructions.
PHRASES: tuple[tuple[str, str, str], ...] = (
    # cause and concession
    ("due to the fact that", "because", "light"),
    ("owing to the fact that", "because", "light"),
    ("in light of the fact that", "because", "light"),
    ("for the reason that", "because", "light"),
    ("on the grounds that", "because", "standard"),
    ("in spite of the fact that", "although", "light"),
    ("despite the fact that", "although", "light"),
    ("in spite of", "despite", "light"),
    # purpose
    ("in order to", "to", "light"),
    ("in an effort to", "to", "light"),
    ("so as to", "to", "standard"),
    ("for the purpose of", "for", "light"),
    ("with the purpose of", "for", "standard"),
    # time
    ("at this point in time", "now", "light"),
    ("at this moment in time", "now", "light"),
    ("at the present time", "now", "light"),
    ("in the near future", "soon", "light"),
    ("at a later date", "later", "light"),
    ("until such time as", "until", "light"),
    ("prior to", "before", "light"),
    ("subsequent to", "after", "light"),
    ("during the course of", "during", "light"),
    ("in the course of", "during", "standard"),
    ("at all times", "always", "light"),
    ("on a daily basis", "daily", "light"),
    ("on a weekly basis", "weekly", "light"),
    ("on a monthly basis", "monthly", "light"),
    ("on a regular basis", "regularly", "light"),
    ("in a timely manner", "promptly", "light"),
    # condition
    ("in the event that", "if", "light"),
    ("in the absence of", "without", "light"),
    ("with the exception of", "except", "light"),
    # ability and obligation
    ("has the ability to", "can", "light"),
    ("is in a position to", "can", "light"),
    ("are in a position to", "can", "light"),
    ("is not in a position to", "cannot", "light"),
    ("are not in a position to", "cannot", "light"),
    ("is not able to", "cannot", "standard"),
    ("are not able to", "cannot", "standard"),
    ("is able to", "can", "standard"),
    ("are able to", "can", "standard"),
    ("has a tendency to", "tends to", "light"),
    ("have a tendency to", "tend to", "light"),
    # place
    ("in the majority of cases", "usually", "light"),
    ("in close proximity to", "near", "light"),
    ("in the vicinity of", "near", "light"),
    ("in excess of", "more than", "standard"),
    # verbs hidden in nouns
    ("make use of", "use", "light"),
    ("makes use of", "uses", "light"),
    ("take into consideration", "consider", "light"),
    ("give consideration to", "consider", "light"),
    ("make a decision", "decide", "standard"),
    ("come to a conclusion", "conclude", "light"),
    ("is indicative of", "indicates", "light"),
    ("make sure that", "ensure that", "standard"),
    # fillers and redundant pairs
    ("it is important to note that", "note that", "light"),
    ("it should be noted that", "note that", "light"),
    ("it is worth noting that", "note that", "light"),
    ("please note that", "note that", "standard"),
    ("as a matter of fact", "in fact", "light"),
    ("first and foremost", "first", "light"),
    ("each and every", "every", "light"),
    ("for the most part", "mostly", "light"),
    ("in conjunction with", "with", "standard"),
    ("along the lines of", "like", "standard"),
    ("by means of", "by", "light"),
    ("with regard to", "regarding", "light"),
    ("end result", "result", "light"),
    ("basic fundamentals", "fundamentals", "light"),
    ("past history", "history", "light"),
    ("absolutely essential", "essential", "light"),
)

# "a large number of" -> "many" is right before a bare noun ("many users") but not before a
# determiner ("many the users"), so each quantifier also gets longer entries "... of the" ->
# "many of the"; the longest match wins, which picks the right form in one pass.
_QUANTIFIERS = (
    ("a large number of", "many", "light"),
    ("a great number of", "many", "light"),
    ("a sufficient number of", "enough", "light"),
    ("the vast majority of", "most", "light"),
    ("the majority of", "most", "standard"),
)
_DETERMINERS = ("the", "these", "those", "them", "us", "you", "it", "our", "your", "their", "its", "his",
                "her", "my", "which", "whom")
PHRASES += tuple(
    entry
    for pattern, replacement, level in _QUANTIFIERS
    for entry in [
        (pattern, replacement, level),
        *((f"{pattern} {d}", f"{replacement} of {d}", level) for d in _DETERMINERS),
    ]
)

_PATTERN_SHAPE = re.compile(r"[a-z]+(?: [a-z]+)+")


def entries_for(level: str) -> list[tuple[str, str]]:
    """(pattern, replacement) pairs active at `level` ("light" or "standard")."""
    if level == "light":
        return [(p, r) for p, r, lv in PHRASES if lv == "light"]
    if level == "standard":
        return [(p, r) for p, r, _ in PHRASES]
    raise ValueError(f"no phrase table for level {level!r}; expected 'light' or 'standard'")


def _validate() -> None:
    # Fail at import, not on a request, if someone adds an entry the engines cannot handle.
    seen: set[str] = set()
    for pattern, replacement, level in PHRASES:
        if not _PATTERN_SHAPE.fullmatch(pattern):
            raise ValueError(f"phrase {pattern!r}: lower-case ASCII words with single spaces only")
        if not replacement or replacement != replacement.strip() or not replacement.isascii():
            raise ValueError(f"phrase {pattern!r}: replacement must be non-empty trimmed ASCII")
        if level not in ("light", "standard"):
            raise ValueError(f"phrase {pattern!r}: unknown level {level!r}")
        if pattern in seen:
            raise ValueError(f"phrase {pattern!r} appears twice")
        seen.add(pattern)


_validate()
