"""Intent normalisation (phase 1) and the near-miss score with its order guard (phase 2)."""

from __future__ import annotations

import pytest

from gateway.cache.intent import looks_structured, near_miss_score, normalise, order_compatible, tokens


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "what is the capital of france"),
        ("Hey, could you tell me a joke?", "tell me a joke"),
        ("Please list the prime numbers below 20. Thanks!", "list the prime number below 20"),
        ("Explain   the\tcities of Spain!!", "explain the city of spain"),
        ("Can you explain boxes?", "explain box"),
    ],
)
def test_trivial_rephrasings_share_a_signature(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is 2+3?", "What is 2*3?"),
        ("What is -5 squared?", "What is 5 squared?"),
        ("What is 3.5 times 2?", "What is 35 times 2?"),
        ("Can I delete this?", "Can't I delete this?"),
        ("How can you tell if an egg is fresh?", "How tell if an egg is fresh?"),
        ("Is this class final?", "Is this clas final?"),
    ],
)
def test_meaningful_differences_keep_distinct_signatures(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


def test_filler_only_at_the_edges() -> None:
    assert tokens("Could you please explain recursion, thank you") == ["explain", "recursion"]
    assert tokens("How can you explain this") == ["how", "can", "you", "explain", "this"]
    assert tokens("thanks") == []


def test_near_miss_score_is_jaccard() -> None:
    a = tokens("What is the capital of France")
    assert near_miss_score(a, tokens("What is the capital city of France")) == pytest.approx(6 / 7)
    assert near_miss_score(a, tokens("What is the capital of Germany")) == pytest.approx(5 / 7)
    assert near_miss_score(a, a) == 1.0
    assert near_miss_score([], a) == 0.0


def test_order_guard_allows_a_moved_block_but_not_a_swap() -> None:
    assert order_compatible(
        tokens("In Python, how do I reverse a list"), tokens("How do I reverse a list in Python")
    )
    assert order_compatible(
        tokens("boiling point of water at sea level"), tokens("boiling point of the water at the sea level")
    )
    assert not order_compatible(
        tokens("convert celsius to fahrenheit"), tokens("convert fahrenheit to celsius")
    )
    assert not order_compatible(tokens("does the dog bite the man"), tokens("does the man bite the dog"))
    assert near_miss_score(tokens("from celsius to fahrenheit"), tokens("from fahrenheit to celsius")) == 0.0


@pytest.mark.parametrize(
    ("text", "structured"),
    [
        ('{"a": 1}', True),
        ("[1, 2, 3]", True),
        ("Fix this:\n```py\nprint(x)\n```", True),
        ("def f(x): return {k: v for k, v in x.items() if v[0] == 1} # why does this fail?", True),
        ("What is the capital of France?", False),
        ("Explain (briefly) how a hash map works and when it degrades to linear time.", False),
        ("   ", True),
    ],
)
def test_structured_text_is_detected(text: str, structured: bool) -> None:
    assert looks_structured(text) is structured
