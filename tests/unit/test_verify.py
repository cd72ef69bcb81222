"""Table-driven cases for the false-hit verifier: each veto reason fires, paraphrases pass."""

from __future__ import annotations

import pytest

from gateway.cache.verify import (
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLD,
    Verdict,
    VerifySettings,
    idf_table,
    verify,
)

PASS = [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("How do I install numpy on Windows?", "how to install numpy on windows"),
    ("how to center a div in css", "how do i center a div with css"),
    ('What does "ls -la" do?', "What does ls -la do?"),
    ("Which one is faster, Go or Rust?", "Which is faster, Go or Rust?"),
    ("Give me 3 ideas for a party", "Give me three ideas for a party"),
    ("How do I log out in Django", "How do I log out of Django"),
    ("how to move files to a folder", "how to move a file into a folder"),
    ("How to convert a string to int", "How do I convert a string to an int"),
    ("I can't log in", "I cannot log in"),
    ("How to sort a list", "How to sort a list"),
]

VETO = [
    ("How to sort a list", "How to sort 5 lists", "number_mismatch"),
    ("Give me three ideas", "Give me five ideas", "number_mismatch"),
    ("Python 3.11 release notes", "Python 3.12 release notes", "number_mismatch"),
    ("Top news at 2:30 GMT", "Top news at 1:25 GMT", "number_mismatch"),
    ("How much is 10 GB in bytes?", "How much is 10 TB in bytes?", "unit_mismatch"),
    ("Timeout after 30 seconds", "Timeout after 30 minutes", "unit_mismatch"),
    ("How to sort a list", "How to not sort a list", "negation"),
    ("How to run Docker with root", "How to run Docker without root", "negation"),
    ("Why does my laptop charge?", "Why doesn't my laptop charge?", "negation"),
    ("the problem isn't who has money.", "the problem is who doesn't have money.", "negation"),
    ("How do I enable SSH on Ubuntu?", "How do I disable SSH on Ubuntu?", "antonym:enable/disable"),
    ("How to add a user to a group", "How to remove a user from a group", "antonym:add/remove"),
    ("When should I buy stocks?", "When should I sell stocks?", "antonym:buy/sell"),
    ("Find the max value in a dict", "Find the min value in a dict", "antonym:min/max"),
    ("Convert Celsius to Fahrenheit", "Convert Fahrenheit to Celsius", "direction"),
    ('What does "ls -la" do?', 'What does "ls -lh" do?', "quoted_string"),
    ('Translate "good morning" to Spanish', 'Translate "good night" to Spanish', "quoted_string"),
    ("How do I install numpy on Windows?", "How do I install numpy on Mac?", "entity_mismatch"),
    ("Explain the difference between TCP and UDP", "Explain the difference between TCP and QUIC",
     "entity_mismatch"),
    ("What does os.path.join do?", "What does os.path.split do?", "entity_mismatch"),
    ("How to use useEffect in react", "How to use useState in react", "entity_mismatch"),
    ("How to sort a list", "How to sort a list fast", "qualifier:fast"),
    ("Best way to learn Spanish", "Best way to learn Spanish for free", "qualifier:free"),
    ("Explain quantum computing", "Explain quantum computing briefly", "qualifier:briefly"),
    ("how to reverse a string", "how to reverse a string in python", "qualifier:python"),
    ("how to use pandas for plotting charts", "how to use polars for cleaning tables", "content_words"),
]


@pytest.mark.parametrize(("query", "candidate"), PASS)
def test_paraphrases_pass(query: str, candidate: str) -> None:
    verdict = verify(query, candidate, 0.95)
    assert verdict == Verdict(True, "ok", verdict.score)
    assert verify(candidate, query, 0.95).ok  # the verdict doesn't depend on which side is cached


@pytest.mark.parametrize(("query", "candidate", "reason"), VETO)
def test_vetoes_name_their_reason(query: str, candidate: str, reason: str) -> None:
    verdict = verify(query, candidate, 0.97)
    assert not verdict.ok
    assert verdict.reason == reason
    assert not verify(candidate, query, 0.97).ok


def test_below_threshold_is_refused_and_phase2_has_no_cosine() -> None:
    strict = VerifySettings(threshold=DEFAULT_THRESHOLD)
    assert verify("a b c", "a b d", DEFAULT_THRESHOLD - 0.01, strict).reason == "below_threshold"
    assert verify("How to sort a list", "How do I sort a list", 0.85).ok  # the route's threshold rules
    assert verify("How to sort a list", "How do I sort a list", None).ok


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (VerifySettings(lexical=False, second_stage=False), True),
        (VerifySettings(lexical=True, second_stage=False), True),  # a qualifier is the second stage's job
        (DEFAULT_SETTINGS, False),
    ],
)
def test_settings_switch_stages(settings: VerifySettings, expected: bool) -> None:
    assert verify("How to sort a list", "How to sort a list fast", 0.95, settings).ok is expected


def test_lexical_switch_off_lets_an_antonym_through_to_the_second_stage() -> None:
    off = VerifySettings(lexical=False)
    assert verify("How do I enable SSH?", "How do I disable SSH?", 0.95).reason.startswith("antonym")
    assert not verify("How do I enable SSH?", "How do I disable SSH?", 0.95, off).reason.startswith("antonym")


def test_idf_table_orders_common_below_rare_words() -> None:
    idf = idf_table()
    assert len(idf) > 20_000
    assert idf["the"] < idf["list"] < idf["python"]


def test_scores_are_bounded() -> None:
    for query, candidate, _ in VETO:
        assert 0.0 <= verify(query, candidate, 0.95).score <= 1.0
