"""Token counting: the shipped ranks are OpenAI's, the encoding follows the model, counts are exact."""

from __future__ import annotations

import pytest
import tiktoken
from tiktoken_ext import openai_public

from gateway.transform.compress import tokens
from gateway.transform.compress.tokens import count_tokens, encoding_for_model, load_ranks, tokenizer_name


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_specs_match_tiktokens_own_definition(encoding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiktoken's constructor would download the ranks; hand it ours and compare everything else.
    ranks = load_ranks(encoding)
    seen: list[str] = []

    def fake_load(url: str, expected_hash: str) -> dict[bytes, int]:
        seen.append(expected_hash)
        return ranks

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    spec = getattr(openai_public, encoding)()
    pattern, sha, special = tokens.SPECS[encoding]
    assert seen == [sha]
    assert spec["pat_str"] == pattern
    assert spec["special_tokens"] == special
    assert len(ranks) == {"cl100k_base": 100256, "o200k_base": 199998}[encoding]


def test_tampered_ranks_are_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"IQ== 0\n"))
    monkeypatch.setattr(tokens, "_BPE", tmp_path)
    with pytest.raises(ValueError, match="do not match"):
        load_ranks("o200k_base")


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("openai/gpt-4.1-nano", "o200k_base"),
    ("o1", "o200k_base"), ("o3-mini", "o200k_base"), ("o4-mini", "o200k_base"), ("gpt-5", "o200k_base"),
    ("gpt-5-mini", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"), ("GPT-4O", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("claude-sonnet-4-5", "cl100k_base"), (None, "cl100k_base"),
    ("omni-moderation", "cl100k_base"), ("", "cl100k_base"),
])
def test_encoding_follows_the_model(model: str | None, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


def test_counts_agree_with_tiktoken_on_the_same_ranks() -> None:
    text = "Déjà vu: naïve café — 12345 tokens\n\n  def f(x):\treturn x**2  # 日本語のテキスト 🙂"
    for encoding in ("cl100k_base", "o200k_base"):
        pattern, _, special = tokens.SPECS[encoding]
        reference = tiktoken.Encoding(encoding + "_ref", pat_str=pattern, mergeable_ranks=load_ranks(encoding),
                                      special_tokens=special)
        model = "gpt-4o" if encoding == "o200k_base" else "gpt-4"
        assert count_tokens(text, model) == len(reference.encode_ordinary(text))
        assert tokenizer_name(model) == encoding


def test_known_token_ids() -> None:
    # Published examples: "hello world" is [15339, 1917] in cl100k and [24912, 2375] in o200k.
    for encoding, ids in (("cl100k_base", [15339, 1917]), ("o200k_base", [24912, 2375])):
        pattern, _, special = tokens.SPECS[encoding]
        enc = tiktoken.Encoding(encoding + "_ids", pat_str=pattern, mergeable_ranks=load_ranks(encoding),
                                special_tokens=special)
        assert enc.encode_ordinary("hello world") == ids
    assert count_tokens("hello world", "gpt-4") == 2
    assert count_tokens("hello world", "gpt-4o") == 2
    # The encodings differ where o200k merges more: a long non-English text needs fewer o200k tokens.
    text = "これは日本語の文章です。トークナイザーの違いを確かめます。" * 5
    assert count_tokens(text, "gpt-4o") < count_tokens(text, "gpt-4")
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1  # special-token text is counted as text


def test_preload_loads_without_counting() -> None:
    tokens.preload("o200k_base")
    assert "o200k_base" in tokens._counters and tokens._names["o200k_base"] == "o200k_base"
