"""The false-hit verifier: decides whether a phase-2 or phase-4 candidate may be served for a query.

Cosine similarity says two questions are *about* the same thing, not that they *ask* the same thing
("enable" and "disable" embed almost identically). So a candidate above the threshold is served only
if it also passes, in order:

1. the lexical guard: every number and unit, negation, opposite pair, quoted string and named entity
   (capitalised names, acronyms, code identifiers, versions) must agree;
2. the second stage: the content words of both questions, weighted by IDF (from a public word-frequency
   table shipped in `gateway/models/word_zipf.tsv`), must overlap enough, and neither side may carry a
   rare extra word the other lacks (an added qualifier such as "fast", "for free", "in Python").

Everything is pure and cheap (microseconds); the defaults favour precision, see
`benchmarks/quality/results.md` for the recall they leave.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.cache.lexicon import AUXILIARIES as _AUXILIARIES
from gateway.cache.lexicon import CONTRACTED as _CONTRACTED
from gateway.cache.lexicon import NEGATIONS as _NEGATIONS
from gateway.cache.lexicon import OPPOSITES as _OPPOSITES
from gateway.cache.lexicon import STOPWORDS as _STOPWORDS
from gateway.cache.lexicon import UNITS as _UNITS
from gateway.cache.lexicon import WRITTEN_NUMBERS as _WRITTEN_NUMBERS

DEFAULT_THRESHOLD = 0.90
DEFAULT_MAX_CONTENT_DIFF = 0.20  # share of IDF mass left unmatched on either side
DEFAULT_QUALIFIER_IDF = 3.3  # an extra word at least this rare (Zipf <= 5.7) is a qualifier
_UNKNOWN_IDF = 7.0  # words outside the table are rarer than all of it
_MODELS = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True, slots=True)
class VerifySettings:
    # The cache applies its (per-route) cosine threshold itself; set this only to have verify()
    # refuse candidates below it as well. DEFAULT_THRESHOLD is the value the evaluation chose.
    threshold: float | None = None
    lexical: bool = True
    second_stage: bool = True
    max_content_diff: float = DEFAULT_MAX_CONTENT_DIFF
    qualifier_idf: float = DEFAULT_QUALIFIER_IDF


DEFAULT_SETTINGS = VerifySettings()


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # "ok" or the veto, e.g. "negation", "antonym:enable/disable", "qualifier:fast"
    score: float  # content-word agreement in [0, 1] (1.0 when the second stage did not run)


_TOKEN = re.compile(r"[A-Za-z0-9_$€£%°][A-Za-z0-9_.+#:'’-]*[A-Za-z0-9_+#%]|[A-Za-z0-9_$€£%]")
_NUMBER = re.compile(r"^v?(\d+(?:[.,:]\d+)*)([a-z%°]*)$")
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`|(?<![A-Za-z])'([^']+)'(?![A-Za-z])")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")
_CAMEL = re.compile(r"[a-z][A-Z]")


@functools.cache
def idf_table() -> dict[str, float]:
    """word -> IDF (9 - Zipf); loaded once, call at start-up to keep the first request fast."""
    table: dict[str, float] = {}
    with open(_MODELS / "word_zipf.tsv", encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                word, zipf = line.rstrip("\n").split("\t")
                table[word] = 9.0 - float(zipf)
    return table


def _idf(word: str) -> float:
    return idf_table().get(word, _UNKNOWN_IDF)


# ---------------------------------------------------------------- analysis of one text


@dataclass(frozen=True, slots=True)
class _Facts:
    words: frozenset[str]  # every lowercased token, apostrophes removed
    numbers: frozenset[str]
    units: frozenset[str]
    negated: bool
    quoted: tuple[str, ...]
    entities: frozenset[str]  # lowercased
    content: dict[str, str]  # stem -> the surface word it came from
    targets: frozenset[str]  # the word after each "to"/"into": what a conversion or move aims at
    negated_heads: frozenset[str]  # what each negation attaches to: "isn't" -> is, "don't have X" -> x


@functools.lru_cache(maxsize=4096)
def _analyse(text: str) -> _Facts:
    text = text.replace("’", "'")
    words: set[str] = set()
    numbers: set[str] = set()
    units: set[str] = set()
    entities: set[str] = set()
    content: dict[str, str] = {}
    targets: set[str] = set()
    aiming = False
    sequence: list[str] = []
    negated = "n't" in text.lower()
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok.endswith("'s"):
            tok = tok[:-2]  # possessive: "Python's" names Python
        low = tok.lower().replace("'", "")
        words.add(low)
        sequence.append(low)
        if aiming and low not in _STOPWORDS:
            targets.add(low)
            aiming = False
        aiming = aiming or low in ("to", "into")
        if low in _NEGATIONS:
            negated = True
        num = _NUMBER.match(low)
        if num:
            numbers.add(num.group(1).replace(",", ""))
            if num.group(2) in _UNITS:
                units.add(_UNITS[num.group(2)])
            continue
        if low in _WRITTEN_NUMBERS:
            numbers.add(_WRITTEN_NUMBERS[low])
        if low in _UNITS:
            units.add(_UNITS[low])
        before = text[: m.start()].rstrip(" \t\"'(*-")
        if _is_entity(tok, sentence_start=not before or before[-1] in ".!?:;\n"):
            entities.add(low.rstrip("."))
        if low.isalpha() and low not in _STOPWORDS and low not in _NEGATIONS:
            content.setdefault(_stem(low), low)
    quoted = tuple(sorted(next(g for g in q.groups() if g).strip().lower() for q in _QUOTED.finditer(text)))
    return _Facts(frozenset(words), frozenset(numbers), frozenset(units), negated, quoted,
                  frozenset(entities), content, frozenset(targets), _negation_heads(sequence))




def _negation_heads(seq: list[str]) -> frozenset[str]:
    """Where negation lands, so "the problem isn't who has money" and "... is who doesn't have money"
    (both negated, different claims) differ. Without a parser: an auxiliary carries the negation
    ("isn't", "is not"); otherwise it falls on the next content word ("don't have money" -> money)."""
    heads = set()
    for i, word in enumerate(seq):
        if word.endswith("nt") and word[:-2] in _CONTRACTED:
            aux = {"ca": "can", "wo": "will"}.get(word[:-2], word[:-2])
            if aux in _AUXILIARIES:
                heads.add(aux)
                continue
        elif word == "cannot":
            heads.add("can")
            continue
        elif word not in _NEGATIONS:
            continue
        elif i > 0 and seq[i - 1] in _AUXILIARIES:
            heads.add(seq[i - 1])
            continue
        following = (w for w in seq[i + 1 :] if w not in _STOPWORDS and w not in _NEGATIONS)
        heads.add(_stem(next(following, "")))
    return frozenset(heads)


def _is_entity(tok: str, sentence_start: bool) -> bool:
    letters = [c for c in tok if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return True  # acronym: API, GPT-4, AWS
    if "_" in tok or "." in tok.strip(".") or "::" in tok or "#" in tok or "+" in tok or _CAMEL.search(tok):
        return True  # code identifier: os.path, snake_case, camelCase, C++, C#
    if any(c.isdigit() for c in tok) and letters:
        return True  # model or version names: gpt4, ipv6, python3
    return tok[0].isupper() and not sentence_start and tok != "I"


_SUFFIXES = ("ingly", "ings", "ing", "edly", "ies", "ied", "ches", "shes", "sses", "xes", "ed", "ly", "s")


def _stem(word: str) -> str:
    """A light suffix stripper: enough to match list/lists, sort/sorting/sorted, not a real stemmer."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix in ("ches", "shes", "sses", "xes"):
                suffix = suffix[-2:]
            stem = word[: -len(suffix)]
            word = stem + "y" if suffix in ("ies", "ied") else stem
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word  # move/moved, file/files


# ---------------------------------------------------------------- the checks


def verify(
    query: str, candidate: str, cosine: float | None, settings: VerifySettings = DEFAULT_SETTINGS
) -> Verdict:
    """May `candidate` (the cached entry's query) be served for `query`? cosine is None for phase 2."""
    if cosine is not None and settings.threshold is not None and cosine < settings.threshold:
        return Verdict(False, "below_threshold", cosine)
    if query == candidate:
        return Verdict(True, "ok", 1.0)
    a, b = _analyse(query), _analyse(candidate)
    if settings.lexical:
        veto = _lexical_veto(a, b)
        if veto:
            return Verdict(False, veto, 0.0)
    if not settings.second_stage:
        return Verdict(True, "ok", 1.0)
    return _second_stage(a, b, settings)


def _lexical_veto(a: _Facts, b: _Facts, rules: frozenset[str] | None = None) -> str | None:
    """The first guard rule (of `rules`, default all) that the pair breaks, or None."""
    for rule, check in _RULES:
        if rules is None or rule in rules:
            found = check(a, b)
            if found:
                return found
    return None


def _number_rule(a: _Facts, b: _Facts) -> str | None:
    ok = a.numbers == b.numbers or _only_a_lone_one(a.numbers, b.numbers)
    return None if ok else "number_mismatch"


def _unit_rule(a: _Facts, b: _Facts) -> str | None:
    return None if a.units == b.units else "unit_mismatch"


def _negation_rule(a: _Facts, b: _Facts) -> str | None:
    return "negation" if a.negated != b.negated or a.negated_heads != b.negated_heads else None


def _antonym_rule(a: _Facts, b: _Facts) -> str | None:
    only_a, only_b = a.words - b.words, b.words - a.words
    for x, y in _OPPOSITES:
        # a swap, not a mere presence: "log out in Django" vs "log out of Django" is no antonym
        if (x in only_a and y in only_b) or (y in only_a and x in only_b):
            return f"antonym:{x}/{y}"
    return None


def _direction_rule(a: _Facts, b: _Facts) -> str | None:
    if a.targets - b.targets and (a.targets - b.targets) & b.words and b.targets - a.targets:
        return "direction"  # "Celsius to Fahrenheit" vs "Fahrenheit to Celsius": same words, swapped
    return None


def _quoted_rule(a: _Facts, b: _Facts) -> str | None:
    if a.quoted != b.quoted and not (_quotes_inside(a, b) and _quotes_inside(b, a)):
        return "quoted_string"
    return None


def _entity_rule(a: _Facts, b: _Facts) -> str | None:
    return None if a.entities <= b.words and b.entities <= a.words else "entity_mismatch"


_RULES = (("number", _number_rule), ("unit", _unit_rule), ("negation", _negation_rule),
          ("antonym", _antonym_rule), ("direction", _direction_rule), ("quoted", _quoted_rule),
          ("entity", _entity_rule))
RULES = tuple(name for name, _ in _RULES)


def lexical_veto(query: str, candidate: str, rules: frozenset[str] | None = None) -> str | None:
    """The lexical guard alone (the classifier's fast veto): the broken rule's reason, or None."""
    if query == candidate:
        return None
    return _lexical_veto(_analyse(query), _analyse(candidate), rules)


SIGNALS = ("number", "unit", "negation", "antonym", "direction", "quoted", "entity_share",
           "content_diff", "max_extra_idf", "extra_words", "extra_imbalance", "len_ratio", "jaccard",
           "same_lowercase", "log_len", "wh_mismatch", "questions_diff", "first_word_diff")


def signals(query: str, candidate: str) -> list[float]:
    """The lexical guard's findings as numbers (order: SIGNALS), symmetric in the two texts: the
    pair classifier's lexical features. Microseconds, like the guard."""
    a, b = _analyse(query), _analyse(candidate)
    rules = [0.0 if check(a, b) is None else 1.0 for _, check in _RULES[:6]]
    n_ent = len(a.entities) + len(b.entities)
    missing = len(a.entities - b.words) + len(b.entities - a.words)
    only_a = _unmatched(a.content, b.content)
    only_b = _unmatched(b.content, a.content)
    total = sum(_idf(w) for w in a.content.values()) + sum(_idf(w) for w in b.content.values())
    diff = sum(_idf(w) for w in only_a) + sum(_idf(w) for w in only_b)
    extra = max((_idf(w) for w in only_a + only_b), default=0.0)
    na, nb = len(a.words), len(b.words)
    union = len(a.words | b.words)
    return [*rules, missing / max(n_ent, 1), diff / total if total else 0.0, extra / _UNKNOWN_IDF,
            min(len(only_a) + len(only_b), 10) / 10.0, min(abs(len(only_a) - len(only_b)), 5) / 5.0,
            min(na, nb) / max(na, nb, 1), len(a.words & b.words) / union if union else 1.0,
            1.0 if query.strip().lower() == candidate.strip().lower() else 0.0,
            math.log1p(na + nb) / 5.0,
            # what a question asks for: "what happened when X" and "how was X" share their words
            0.0 if (a.words & _WH) == (b.words & _WH) else 1.0,
            min(abs(query.count("?") - candidate.count("?")), 3) / 3.0,
            0.0 if _first_word(query) == _first_word(candidate) else 1.0]


_WH = frozenset("what why how which when where who whom whose".split())


def _first_word(text: str) -> str:
    m = _TOKEN.search(text)
    return m.group().lower() if m else ""


def _only_a_lone_one(x: frozenset[str], y: frozenset[str]) -> bool:
    # "which one is faster" vs "which is faster": a bare "one" is usually a pronoun.
    return (x == {"1"} and not y) or (y == {"1"} and not x)


def _quotes_inside(a: _Facts, b: _Facts) -> bool:
    """A quoted string that the other side states unquoted is the same string."""
    return all(all(t.lower().replace("'", "") in b.words for t in _TOKEN.findall(q)) for q in a.quoted)


def _second_stage(a: _Facts, b: _Facts, settings: VerifySettings) -> Verdict:
    only_a = _unmatched(a.content, b.content)
    only_b = _unmatched(b.content, a.content)
    total = sum(_idf(w) for w in a.content.values()) + sum(_idf(w) for w in b.content.values())
    diff = sum(_idf(w) for w in only_a) + sum(_idf(w) for w in only_b)
    score = 1.0 - diff / total if total else 1.0
    # An extra word with no counterpart on the other side adds a requirement ("fast", "for free").
    # A one-for-one substitution is judged by the overall score instead: it is how paraphrases
    # are made. A side left with more unmatched words than the other has added something.
    for extra, other in ((only_a, only_b), (only_b, only_a)):
        if len(extra) > len(other):
            word = max(extra, key=_idf)
            if _idf(word) >= settings.qualifier_idf:
                return Verdict(False, f"qualifier:{word}", score)
    if 1.0 - score > settings.max_content_diff:
        return Verdict(False, "content_words", score)
    return Verdict(True, "ok", score)


def _unmatched(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """Content words of `mine` with no equal stem, or a shared prefix of 5+ letters, in `theirs`."""
    out = []
    for stem, word in mine.items():
        if stem in theirs:
            continue
        if len(stem) >= 5 and any(len(s) >= 5 and s[:5] == stem[:5] for s in theirs):
            continue  # reverse/reversal, configure/configuration
        out.append(word)
    return out
