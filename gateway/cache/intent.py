"""Intent signatures (phase 1) and the token-overlap near-miss score (phase 2), pure functions.

Phase 1 serves without a verifier, so normalisation only removes what cannot change the answer:
case, sentence punctuation, whitespace, politeness, plural endings. Operators, signs, digits and
negations survive ("2+3" and "2*3", "-5" and "5", "can" and "can't" keep distinct signatures).

Phase 2's metric is Jaccard over normalised token sets, plus an order guard. Why Jaccard at 0.85:
for a question of n tokens it admits one added or dropped word once n >= 6 (6/7 = 0.857) and a
substituted word only once n >= 13 ((n-1)/(n+1) >= 0.85), so short questions, where one word is
most of the meaning, never near-miss on a substitution. Sets ignore order, so a swap such as
"celsius to fahrenheit" / "fahrenheit to celsius" scores 1.0; the order guard accepts the shared
tokens only in the same order or with one block of them moved ("in Python, how do I ..." /
"how do I ... in Python"), which a role or direction swap is not. The verifier still runs after.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet

# Numbers (with inner separators) first, then words (with inner apostrophes), then any single
# symbol. Sentence punctuation is dropped afterwards; every other symbol is meaning.
_TOKEN = re.compile(r"\d+(?:[.,:/]\d+)*|[^\W_]+(?:['’][^\W_]+)*|[^\w\s]", re.UNICODE)
_SENTENCE_PUNCT = frozenset(".,!?;:\"'()[]{}…`¿¡“”‘’«»")
_FILLER_ANYWHERE = frozenset({"please", "pls", "plz", "kindly", "thanks", "thx"})
# Only at the start: "can you explain X" asks for X, but "how can you tell" keeps its "can you".
_LEADING: tuple[tuple[str, ...], ...] = (
    ("hey",),
    ("hi",),
    ("hello",),
    ("ok",),
    ("okay",),
    ("so",),
    ("could", "you"),
    ("can", "you"),
    ("would", "you"),
    ("will", "you"),
    ("i", "want", "you", "to"),
    ("i'd", "like", "you", "to"),
)
_TRAILING: tuple[tuple[str, ...], ...] = (
    ("thank", "you"),
    ("thanks",),
    ("thank", "you", "very", "much"),
    ("thanks", "a", "lot"),
)
_NO_STEM = frozenset({"is", "was", "has", "does", "this", "his", "its", "us", "yes", "as", "always", "news"})

_CODE_CHARS = frozenset("{}[]()<>=;$\\|&#`")


def tokens(text: str) -> list[str]:
    """Normalised tokens of a prose question, in order (empty when nothing is left)."""
    toks = [t for t in _TOKEN.findall(text.casefold()) if t not in _SENTENCE_PUNCT]
    toks = [t for t in toks if t not in _FILLER_ANYWHERE]
    changed = True
    while changed and toks:
        changed = False
        for phrase in _LEADING:
            if tuple(toks[: len(phrase)]) == phrase:
                toks = toks[len(phrase) :]
                changed = True
    for phrase in _TRAILING:
        if len(toks) > len(phrase) and tuple(toks[-len(phrase) :]) == phrase:
            toks = toks[: -len(phrase)]
    return [_stem(t) for t in toks]


def _stem(tok: str) -> str:
    """Plural endings only: "lists"->"list", "cities"->"city", "boxes"->"box"; never "class", "is"."""
    if len(tok) <= 3 or not tok.isalpha() or tok in _NO_STEM:
        return tok
    if tok.endswith("ies") and len(tok) > 4:
        return tok[:-3] + "y"
    if tok.endswith(("sses", "xes", "ches", "shes", "zzes")):
        return tok[:-2]
    if tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
        return tok[:-1]
    return tok


def normalise(text: str) -> str:
    return " ".join(tokens(text))


def looks_structured(text: str) -> bool:
    """JSON, code or markup: compared byte for byte (phase 3) only, never by wording."""
    stripped = text.lstrip()
    if not stripped:
        return True
    if stripped[0] in "{[<" or "```" in text:
        return True
    code = sum(1 for c in text if c in _CODE_CHARS)
    return len(text) >= 40 and code / len(text) > 0.05


def jaccard(a: AbstractSet[str], b: AbstractSet[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def order_compatible(a: list[str], b: list[str]) -> bool:
    """Shared tokens appear in the same order, or one contiguous block of them was moved."""
    common = set(a) & set(b)
    # First occurrences only: a repeated word ("the") is not a reordering.
    x = [t for t in dict.fromkeys(a) if t in common]
    y = [t for t in dict.fromkeys(b) if t in common]
    if x == y:
        return True
    lo = 0
    while lo < len(x) and x[lo] == y[lo]:
        lo += 1
    hi = len(x)
    while hi > lo and x[hi - 1] == y[hi - 1]:
        hi -= 1
    mid_x, mid_y = x[lo:hi], y[lo:hi]
    # Moving one block = swapping two adjacent blocks = the middle of one is a rotation of the other.
    doubled = mid_x + mid_x
    return any(doubled[k : k + len(mid_y)] == mid_y for k in range(1, len(mid_x)))


def near_miss_score(a: list[str], b: list[str]) -> float:
    """Jaccard of the token sets, or 0.0 when the order guard rejects the pair."""
    score = jaccard(set(a), set(b))
    if score > 0.0 and not order_compatible(a, b):
        return 0.0
    return score
