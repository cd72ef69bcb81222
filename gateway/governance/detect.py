"""The policy detectors, compiled once: PII (emails, phones, card numbers with Luhn, API keys and
tokens), regex deny-lists, maximum prompt size, and a prompt-injection heuristic.

Each detector has `find(text) -> reason | None` (block and flag) and, where it makes sense,
`redact(text) -> (text, count)`. Patterns are written so that a match can only start at the
beginning of a run of its characters (look-behinds), which keeps every scan linear in the text, and
so that they begin with a literal or a character class, which lets the regex engine skip ahead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Protocol

# Each pattern starts with a literal or a character class (look-behinds come after the first
# character): sre then skips ahead in C to where a match can begin, instead of trying every branch
# at every position. Secrets are one pattern per provider for the same reason (literal prefixes).
_SECRETS = (
    r"sk-(?<![\w-]sk-)(?:proj-|ant-(?:api\d\d-)?|gw-)?[A-Za-z0-9_-]{20,}",
    r"(?:AKIA|ASIA)(?<![A-Z0-9]AKIA)(?<![A-Z0-9]ASIA)[0-9A-Z]{16}(?![0-9A-Z])",
    r"gh[pousr]_(?<!\wgh[pousr]_)[A-Za-z0-9]{36,}",
    r"github_pat_(?<!\wgithub_pat_)[A-Za-z0-9_]{22,}",
    r"xox[abposr]-(?<![\w-]xox[abposr]-)[A-Za-z0-9-]{10,}",
    r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}",
    r"[spr]k_(?:live|test)_(?<!\w[spr]k_live_)(?<!\w[spr]k_test_)[A-Za-z0-9]{16,}",
    r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"[Bb]earer(?<!\w[Bb]earer)\s+[A-Za-z0-9._~+/=-]{20,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
)
_EMAIL_LOCAL = re.compile(r"[\w.%+-]{1,64}$")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_DIGIT = re.compile(r"\d")
# What a match needs, checked with str.find/str.count (memchr speed) before any pattern runs: the re
# module scans at ~25 ns a character whatever the pattern, these at a few. Every secret pattern holds
# one of these literals (case-sensitive, as the patterns are).
_SECRET_LITERALS = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox",
                    "AIza", "k_live_", "k_test_", "eyJ", "earer", "-----BEGIN ")
_UNDERSCORED = tuple(lit for lit in _SECRET_LITERALS if "_" in lit)  # one "_" scan gates these
_CARD_DIGITS = 13  # the fewest digits a card number has
_PHONE_DIGITS = 10  # the fewest digits of the national pattern (the other one starts with "+")


def _digits(text: str) -> int:
    """How many digits `text` has, at least; exact for ASCII text. Other text may hold digits of
    other scripts, which the patterns match too: it reports enough for every pattern to be tried."""
    if not text.isascii():
        return _CARD_DIGITS if _DIGIT.search(text) is not None else 0
    return sum(map(text.count, "0123456789"))


def _may_hold_secret(text: str) -> bool:
    """False only when no literal of `_SECRET_LITERALS` is in `text` (written out: fewer scans)."""
    if "sk-" in text or "eyJ" in text or "earer" in text or "xox" in text or "-----BEGIN " in text:
        return True
    if "A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text):
        return True
    return "_" in text and any(lit in text for lit in _UNDERSCORED)
_CARD = r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?!\d)"
_PHONE = (
    r"\+(?<![\w+]\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)",
    r"[\d(](?<![\w+(][\d(])(?:(?<=\()\d{3}\)\s?|(?<!\()\d{2}[ .-])\d{3}[ .-]\d{4}(?!\d)",
)

# (pattern, weight, words of which one must appear, lower-cased, before the pattern is even tried)
_INJECTION: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    (r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*(?:previous|prior|above|"
     r"earlier|preceding|system)\s+(?:instructions?|prompts?|rules|directions|messages?)", 1.0,
     ("ignore", "disregard", "forget", "override")),
    (r"\b(?:reveal|show|print|repeat|output|leak)\s+(?:me\s+)?(?:your|the)\s+(?:system|hidden|initial|"
     r"original)\s+(?:prompt|instructions?|message)", 1.0, ("system", "hidden", "initial", "original")),
    (r"\byou\s+are\s+now\s+(?:DAN|in\s+developer\s+mode|jailbroken|unrestricted|unfiltered)", 1.0, ("now",)),
    (r"\b(?:pretend|act)\s+(?:to\s+be|as\s+if|as)\b[^.\n]{0,60}\b(?:no|without)\s+(?:restrictions|filters|"
     r"rules|limits|guidelines)", 0.6, ("pretend", "act")),
    (r"\bdo\s+anything\s+now\b", 0.6, ("anything",)),
    (r"\bjailbreak", 0.5, ("jailbreak",)),
    (r"\bdeveloper\s+mode\b", 0.5, ("developer",)),
    (r"\bnew\s+instructions\s*:", 0.4, ("instructions",)),
    (r"<\|?/?(?:system|im_start|im_end)\|?>", 0.5, ("system>", "im_start", "im_end", "system|>")),
)


class Detector(Protocol):
    def find(self, text: str) -> str | None: ...
    def spans(self, text: str) -> list[tuple[int, int]]: ...  # what `redact` would replace
    def redact(self, text: str) -> tuple[str, int]: ...


def luhn_ok(number: str) -> bool:
    digits = [ord(c) - 48 for c in number if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Pii:
    """One scanner per entity, each with a cheap pre-check; emails are found from their "@"."""

    ORDER = ("secret", "email", "card", "phone")

    def __init__(self, entities: Iterable[str]) -> None:
        wanted = set(entities)
        self.entities = [e for e in self.ORDER if e in wanted]
        self.secrets = [re.compile(p) for p in _SECRETS]
        self.card = re.compile(_CARD)
        self.phones = [re.compile(p) for p in _PHONE]
        # `find` only asks whether any matches: one C scan per entity instead of one per pattern.
        self.any_secret = re.compile("|".join(f"(?:{p})" for p in _SECRETS))
        self.any_phone = re.compile("|".join(f"(?:{p})" for p in _PHONE))

    def _spans(self, entity: str, text: str) -> Iterator[tuple[int, int]]:
        if entity == "email":
            at = text.find("@")
            while at != -1:
                local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
                domain = _EMAIL_DOMAIN.match(text, at + 1)
                if local is not None and domain is not None:
                    start = local.start()
                    while start < at and text[start] in ".%+-":
                        start += 1
                    if start < at:
                        yield start, domain.end()
                at = text.find("@", at + 1)
            return
        if entity == "secret":
            if not _may_hold_secret(text):
                return
            for rx in self.secrets:
                for m in rx.finditer(text):
                    yield m.span()
            return
        digits = _digits(text)  # cards and phones below
        if entity == "card":
            if digits < _CARD_DIGITS:
                return
            for m in self.card.finditer(text):
                if luhn_ok(m.group()):
                    yield m.span()
            return
        if digits < _PHONE_DIGITS and "+" not in text:
            return
        for rx in self.phones:
            for m in rx.finditer(text):
                yield m.span()

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [span for e in self.entities for span in self._spans(e, text)]

    def find(self, text: str) -> str | None:
        digits = _digits(text) if "card" in self.entities or "phone" in self.entities else 0
        for e in self.entities:
            if e == "secret":
                found = _may_hold_secret(text) and self.any_secret.search(text) is not None
            elif e == "phone":
                found = (digits >= _PHONE_DIGITS or "+" in text) and self.any_phone.search(text) is not None
            elif e == "card" and digits < _CARD_DIGITS:
                found = False
            else:
                found = next(self._spans(e, text), None) is not None
            if found:
                return e
        return None

    def redact(self, text: str) -> tuple[str, int]:
        count = 0
        for e in self.entities:  # secrets first: a token may look like an email or a number
            spans = list(self._spans(e, text))
            if not spans:
                continue
            count += len(spans)
            parts: list[str] = []
            last = 0
            for start, end in _merged(spans):
                parts += (text[last:start], f"[REDACTED_{e.upper()}]")
                last = end
            text = "".join(parts) + text[last:]
        return text, count


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


class Deny:
    def __init__(self, patterns: list[str], ignore_case: bool) -> None:
        self.rx = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE if ignore_case else 0)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self.rx.finditer(text)]

    def find(self, text: str) -> str | None:
        return "denied_pattern" if self.rx.search(text) else None

    def redact(self, text: str) -> tuple[str, int]:
        return self.rx.subn("[REDACTED]", text)


class MaxPrompt:
    def __init__(self, max_chars: int | None, max_tokens: int | None) -> None:
        limits = [n for n in (max_chars, max_tokens * 4 if max_tokens is not None else None) if n is not None]
        self.max_chars = min(limits)

    def find(self, text: str) -> str | None:
        return "prompt_too_large" if len(text) > self.max_chars else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        return []

    def redact(self, text: str) -> tuple[str, int]:
        return text, 0


class Injection:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.rules = [(re.compile(p, re.IGNORECASE), w, words) for p, w, words in _INJECTION]
        # Every rule needs one of its words: a text with none of them is scored 0 after a few
        # substring scans (one alternation regex over the text costs several times more).
        self.words = tuple(dict.fromkeys(k for _, _, words in _INJECTION for k in words))

    def score(self, text: str) -> float:
        lower = text.lower()
        if not any(k in lower for k in self.words):
            return 0.0
        return sum(w for rx, w, words in self.rules if any(k in lower for k in words) and rx.search(text))

    def find(self, text: str) -> str | None:
        return "prompt_injection" if self.score(text) >= self.threshold else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        return []

    def redact(self, text: str) -> tuple[str, int]:
        return text, 0
