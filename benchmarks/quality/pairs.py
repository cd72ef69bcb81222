"""The verifier's training data: QQP subset, STS-B and MRPC train, generated adversarial pairs, and a
train/validation/test split by connected text components (no text is in two splits).

    from benchmarks.quality.pairs import build
    pairs = build()          # list[Pair], deterministic (seeded)
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import xxhash

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
QQP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qqp-train.jsonl"
QQP_PAIRS = 16_000  # sized so embedding every text takes ~10 min on 2 cores (8 ms a text)
ADVERSARIAL_SOURCES = 7_000  # texts a perturbation is tried on
SEED = 14
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    same: bool
    source: str  # qqp | stsb | mrpc | adv:<kind> | handwritten:<kind>
    split: str = ""


def qqp_path() -> Path:
    for p in (QQP, Path("/work/shared/data/qqp-train.jsonl")):
        if p.exists():
            return p
    raise FileNotFoundError("qqp-train.jsonl not found beside the checkout (../shared/data/)")


def load_qqp(n: int = QQP_PAIRS) -> list[Pair]:
    rows = [json.loads(x) for x in qqp_path().read_text(encoding="utf-8").splitlines() if x]
    random.Random(SEED).shuffle(rows)
    return [Pair(r["a"], r["b"], bool(r["same"]), "qqp") for r in rows[:n]]


def load_stsb() -> list[Pair]:
    out = []
    for line in (DATA / "sts-train.csv").read_text(encoding="utf-8").splitlines():
        f = line.split("\t")
        score = float(f[4])
        if score >= 4.5 or score <= 2.5:  # the band in between is ambiguous and left out
            out.append(Pair(f[5], f[6], score >= 4.5, "stsb"))
    return out


def load_mrpc() -> list[Pair]:
    lines = (DATA / "msr_paraphrase_train.txt").read_text(encoding="utf-8-sig").splitlines()
    return [Pair(f[3], f[4], f[0] == "1", "mrpc") for f in (x.split("\t") for x in lines[1:])]


def load_handwritten() -> list[Pair]:
    """The 205 pairs today's rules were tuned on: evaluated (test only), never trained on."""
    rows = [json.loads(x) for x in (DATA / "adversarial.jsonl").read_text(encoding="utf-8").splitlines()]
    return [Pair(r["a"], r["b"], bool(r["same"]), f"handwritten:{r['kind']}", "test") for r in rows]


# ---------------------------------------------------------------- adversarial generation

_AUX_NEG = {"is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "can": "can't",
            "could": "couldn't", "should": "shouldn't", "would": "wouldn't", "will": "won't",
            "does": "doesn't", "do": "don't", "did": "didn't", "has": "hasn't", "have": "haven't"}
_AUX = re.compile(r"\b(" + "|".join(_AUX_NEG) + r")\b", re.IGNORECASE)
_NUM = re.compile(r"\b\d+(?:\.\d+)?\b")
_UNIT_SWAP = {"minutes": "hours", "hours": "minutes", "days": "weeks", "weeks": "days", "months": "years",
              "years": "months", "kg": "pounds", "pounds": "kg", "km": "miles", "miles": "km", "GB": "TB",
              "TB": "GB", "MB": "GB", "seconds": "minutes", "dollars": "euros", "rupees": "dollars",
              "meters": "feet", "feet": "meters", "month": "year", "year": "month", "day": "week",
              "week": "day", "hour": "minute", "minute": "hour", "percent": "points", "lakhs": "crores"}
_UNIT = re.compile(r"\b(" + "|".join(map(re.escape, _UNIT_SWAP)) + r")\b")
_QUALIFIERS = ("for free", "in India", "in the US", "for beginners", "without a degree", "at home",
               "after 40", "on a budget", "in Python", "in 2017", "online", "quickly", "legally",
               "for kids", "at night", "in winter", "on Android", "without money", "as a student",
               "in one month", "for a woman", "in Canada", "on Windows", "without experience")
_OPP_PAIRS = (
    "good/bad best/worst better/worse increase/decrease rich/poor easy/hard easiest/hardest "
    "love/hate buy/sell start/stop win/lose pros/cons advantages/disadvantages before/after "
    "first/last gain/lose happy/sad cheap/expensive cheapest/most_expensive fast/slow male/female "
    "men/women boys/girls husband/wife young/old legal/illegal true/false right/wrong up/down "
    "positive/negative strong/weak success/failure add/remove enable/disable open/close "
    "like/dislike safe/dangerous healthy/unhealthy north/south east/west more/less most/least "
    "high/low higher/lower big/small bigger/smaller long/short longer/shorter hot/cold import/export "
    "upload/download input/output public/private online/offline inside/outside"
).split()
_OPPOSITE = {x.replace("_", " "): y.replace("_", " ") for p in _OPP_PAIRS for x, y in [p.split("/")]}
_OPPOSITE |= {v: k for k, v in _OPPOSITE.items()}
_OPP = re.compile(r"\b(" + "|".join(map(re.escape, sorted(_OPPOSITE, key=len, reverse=True))) + r")\b")
_SWAP_PATTERNS = (
    re.compile(r"\bfrom (\w+) to (\w+)"),
    re.compile(r"\b(\w+) (?:to|into) (\w+)$"),
    re.compile(r"\b(\w+) (?:better|worse|bigger|smaller|stronger|faster|cheaper|safer) than (\w+)"),
    re.compile(r"\b(\w+) (?:hate|hates|love|loves|beat|beats|defeat|defeated|attack|attacked|"
               r"fear|fears|follow|follows|married|marry|kill|killed|support|supports) (\w+)"),
)
_SURFACE = ((r"^How do I ", "How can I "), (r"^How can I ", "How do I "), (r"^What is ", "What's "),
            (r"^What's ", "What is "), (r"^What are some ", "What are the "), (r"^Which is ", "What is "),
            (r"^How do you ", "How does one "), (r"^Why do ", "Why is it that "), (r"\?$", ""),
            (r"^What is the best way to ", "How do I best "), (r"^Is it possible to ", "Can I "),
            (r"^Can I ", "Is it possible to "))
_ENTITY = re.compile(r"(?<=\w )([A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})?)")


def _negate(t: str, rng: random.Random) -> str | None:
    m = _AUX.search(t)
    if not m:
        return None
    neg = _AUX_NEG[m.group(1).lower()]
    neg = neg[0].upper() + neg[1:] if m.group(1)[0].isupper() else neg
    return t[: m.start()] + neg + t[m.end():]


def _number(t: str, rng: random.Random) -> str | None:
    m = _NUM.search(t)
    if not m:
        return None
    v = float(m.group())
    new = v + rng.choice([1, 2, 5, 10]) if v < 100 else v * rng.choice([2, 3]) if v != 0 else 1
    s = str(int(new)) if m.group().isdigit() else f"{new:.1f}"
    return t[: m.start()] + s + t[m.end():]


def _unit(t: str, rng: random.Random) -> str | None:
    m = _UNIT.search(t)
    return None if not m else t[: m.start()] + _UNIT_SWAP[m.group(1)] + t[m.end():]


def _opposite(t: str, rng: random.Random) -> str | None:
    m = _OPP.search(t)
    return None if not m else t[: m.start()] + _OPPOSITE[m.group(1)] + t[m.end():]


def _qualifier(t: str, rng: random.Random) -> str | None:
    q = rng.choice(_QUALIFIERS)
    if q.lower() in t.lower():
        return None
    body = t.rstrip(" ?.!")
    return f"{body} {q}{t[len(body):]}"


def _swap(t: str, rng: random.Random) -> str | None:
    for pat in _SWAP_PATTERNS:
        m = pat.search(t)
        if m and m.group(1).lower() != m.group(2).lower():
            s1, e1, s2, e2 = m.start(1), m.end(1), m.start(2), m.end(2)
            return t[:s1] + m.group(2) + t[e1:s2] + m.group(1) + t[e2:]
    return None


def _surface(t: str, rng: random.Random) -> str | None:
    """A same-meaning edit: the classifier must not learn that every edit changes the question."""
    options = [(p, r) for p, r in _SURFACE if re.search(p, t)]
    if options and rng.random() < 0.7:
        p, r = rng.choice(options)
        return re.sub(p, r, t, count=1)
    return t.lower().rstrip("?") if t != t.lower() else None


def generate(texts: list[str], entities: list[str], n: int, rng: random.Random) -> list[Pair]:
    def entity(t: str, rng: random.Random) -> str | None:
        ms = [m for m in _ENTITY.finditer(t) if m.group(1) not in ("I", "What", "How", "Why")]
        if not ms:
            return None
        m = rng.choice(ms)
        other = rng.choice(entities)
        return None if other == m.group(1) else t[: m.start(1)] + other + t[m.end(1):]

    gens = {"negation": _negate, "numbers": _number, "units": _unit, "opposites": _opposite,
            "qualifier": _qualifier, "swapped": _swap, "entities": entity, "surface": _surface}
    # Rare kinds are tried first so that each kind is represented.
    order = ["units", "swapped", "numbers", "opposites", "entities", "negation", "qualifier", "surface"]
    weights = {"units": 1, "swapped": 1, "numbers": 1, "opposites": 1, "entities": 0.5, "negation": 0.35,
               "qualifier": 0.25, "surface": 0.5}
    out = []
    for t in rng.sample(texts, min(n, len(texts))):
        for kind in order:
            if rng.random() > weights[kind]:
                continue
            v = gens[kind](t, rng)
            if v and v != t:
                out.append(Pair(t, v, kind == "surface", f"adv:{kind}"))
                break
    return out


# ---------------------------------------------------------------- split


def _split_of(key: str) -> str:
    h = xxhash.xxh64_intdigest(key.encode(), seed=SEED) / 2**64
    acc = 0.0
    for name, share in SPLITS:
        acc += share
        if h < acc:
            return name
    return SPLITS[-1][0]


def split(pairs: list[Pair]) -> list[Pair]:
    """Each connected component of texts (a text linked to every text it is paired with) to one split."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = find(p.a), find(p.b)
        if ra != rb:
            parent[ra] = rb
    return [Pair(p.a, p.b, p.same, p.source, _split_of(find(p.a))) for p in pairs]


def build() -> list[Pair]:
    rng = random.Random(SEED)
    base = load_qqp() + load_stsb() + load_mrpc()
    qqp_texts = sorted({t for p in base if p.source == "qqp" for t in (p.a, p.b)})
    entities = sorted({m.group(1) for t in qqp_texts for m in _ENTITY.finditer(t)})
    adv = generate(qqp_texts, entities, ADVERSARIAL_SOURCES, rng)
    # Adversarial pairs are generated before the split: a variant joins its source text's component.
    return split(base + adv) + load_handwritten()


def texts(pairs: list[Pair]) -> list[str]:
    return sorted({t for p in pairs for t in (p.a, p.b)})


if __name__ == "__main__":
    from collections import Counter

    ps = build()
    print(len(ps), "pairs,", len(texts(ps)), "texts")
    print(Counter((p.source.split(":")[0], p.split) for p in ps))
    print(Counter(p.source for p in ps if p.source.startswith("adv")))
    rng = random.Random(1)
    for p in rng.sample([p for p in ps if p.source.startswith("adv")], 20):
        print(p.source, p.same, "|", p.a, "|", p.b)
