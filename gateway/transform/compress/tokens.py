"""Token counting with OpenAI's BPE tokenizers (o200k_base, cl100k_base), offline, chosen per model.

Encoding is done by `tiktoken` (OpenAI's own library); its BPE ranks ship inside the gateway
(gateway/models/bpe/, see the NOTICE there) and are checked against the SHA-256 that tiktoken
pins, so nothing is downloaded at run time. `encoding_for_model` picks o200k_base for the GPT-4o
generation and later (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4, chatgpt-4o) and cl100k_base for
everything else: older OpenAI models, embeddings, and providers whose tokenizer is not public
(Anthropic: cl100k_base is the usual stand-in, close enough for limits and before/after
differences). If tiktoken is missing, the MiniLM WordPiece tokenizer shipped in
gateway/models/tokenizer.json estimates instead (`tokenizer_name()` then says so).

Each encoding is loaded once, lazily, under a lock; counting is thread-safe afterwards (both
backends are Rust and release the GIL while encoding).
"""

from __future__ import annotations

import base64
import gc
import gzip
import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["Encoding", "count_tokens", "encoding_for_model", "preload", "tokenizer_name"]

Encoding = Literal["o200k_base", "cl100k_base"]

_MODELS = Path(__file__).resolve().parents[2] / "models"
_MINILM = _MODELS / "tokenizer.json"
_BPE = _MODELS / "bpe"

# Copied from tiktoken_ext/openai_public.py (tests/unit/test_tokens.py asserts they still match).
_CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
               r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

SPECS: dict[str, tuple[str, str, dict[str, int]]] = {
    # name: (pattern, SHA-256 of the uncompressed ranks as pinned by tiktoken, special tokens)
    "cl100k_base": (_CL100K_PAT, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
                    {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                     "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}),
    "o200k_base": (_O200K_PAT, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
                   {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}

# The GPT-4o generation and later; anything else (gpt-4, gpt-3.5, text-embedding-3, claude-*) is cl100k.
_O200K_MODEL = re.compile(r"^(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|chatgpt-4o|o\d)(?:\b|-|$)")

_lock = threading.Lock()
_counters: dict[str, Callable[[str], int]] = {}
_names: dict[str, str] = {}


def encoding_for_model(model: str | None) -> Encoding:
    """The tokenizer of an OpenAI model name (provider prefixes like "openai/" are ignored)."""
    if not model:
        return "cl100k_base"
    name = model.lower().rsplit("/", 1)[-1]
    return "o200k_base" if _O200K_MODEL.match(name) else "cl100k_base"


def load_ranks(encoding: str) -> dict[bytes, int]:
    """The shipped ranks of `encoding`, refused unless they hash to what tiktoken pins."""
    raw = gzip.decompress((_BPE / f"{encoding}.tiktoken.gz").read_bytes())
    expected = SPECS[encoding][1]
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError(f"{encoding}: shipped BPE ranks do not match tiktoken's pinned hash")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _load_tiktoken(encoding: str) -> Callable[[str], int]:
    import tiktoken

    pattern, _, special = SPECS[encoding]
    enc = tiktoken.Encoding(encoding, pat_str=pattern, mergeable_ranks=load_ranks(encoding),
                            special_tokens=special)
    # The Rust core keeps its own copy of the ranks; the Python dict is only needed to build it,
    # and dropping it saves ~16 MB (cl100k) / ~30 MB (o200k) per worker.
    enc._mergeable_ranks = {}
    gc.collect()
    # encode_ordinary: user text containing "<|endoftext|>" is text, not a special token
    return lambda text: len(enc.encode_ordinary(text))


def _load_minilm() -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_MINILM))
    # MiniLM's 256-token window must not cap a count of a long prompt.
    tokenizer.no_truncation()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def _load(encoding: str) -> Callable[[str], int]:
    with _lock:
        if encoding not in _counters:
            try:
                counter, name = _load_tiktoken(encoding), encoding
            except ImportError:  # tiktoken missing: an estimate beats no count
                counter, name = _load_minilm(), "minilm-wordpiece-estimate"
            _names[encoding] = name
            _counters[encoding] = counter
        return _counters[encoding]


def preload(*encodings: Encoding) -> None:
    """Load these encodings now (a worker's start-up), not at the first request that needs one.

    Loading takes about a second for cl100k_base and two for o200k_base (parsing the ranks), which
    must not land on the event loop in the middle of serving.
    """
    for encoding in encodings or ("cl100k_base", "o200k_base"):
        _load(encoding)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` by `model`'s tokenizer (cl100k_base when no model is named)."""
    if not text:
        return 0
    encoding = encoding_for_model(model)
    counter = _counters.get(encoding) or _load(encoding)
    return counter(text)


def tokenizer_name(model: str | None = None) -> str:
    """Which tokenizer counts for `model`: "o200k_base", "cl100k_base" or "minilm-wordpiece-estimate"."""
    encoding = encoding_for_model(model)
    _load(encoding)
    return _names[encoding]
