"""Dedup of long repeated paragraphs: exact by hash, near by embedding plus a lexical guard."""

from __future__ import annotations

import numpy as np

from gateway.transform.compress.dedup import dedup_units

DOC = (
    "The Service Level Agreement guarantees 99.9 percent monthly uptime for the production API. "
    "Downtime is measured in one-minute intervals by an external probe in three regions, and a "
    "minute counts as down when two probes fail. Scheduled maintenance announced seven days ahead "
    "is excluded. Credits are 10 percent of the monthly fee below 99.9 percent, 25 percent below 99 "
    "percent and 50 percent below 95 percent, and must be claimed within thirty days of the incident."
)
assert len(DOC) >= 400


def test_exact_copy_becomes_reference() -> None:
    units = [
        ("the system prompt", "Be brief."),
        ("message 1", f"Here is our SLA.\n\n{DOC}\n\nWhat is the credit below 99%?"),
        ("message 2", "Credits are tiered."),
        ("message 3", f"Again:\n\n{DOC}\n\nAnd below 95%?"),
    ]
    texts, count = dedup_units(units)
    assert count == 1
    assert texts[:3] == [t for _, t in units[:3]]
    assert texts[3] == "Again:\n\n[same as the document in message 1, paragraph 2]\n\nAnd below 95%?"


def test_whitespace_differences_still_match() -> None:
    rewrapped = DOC.replace(". ", ".\n", 3)
    texts, count = dedup_units([("message 1", DOC), ("message 2", rewrapped)])
    assert count == 1 and texts[1] == "[same as the document in message 1, paragraph 1]"


def test_short_and_protected_paragraphs_are_kept() -> None:
    short = "Short paragraph repeated."
    quoted = f'"{DOC}"'
    fenced = f"```\n{DOC}\n\n{DOC}\n```"
    units = [("message 1", short), ("message 2", short), ("message 3", quoted), ("message 4", quoted),
             ("message 5", fenced), ("message 6", fenced)]
    texts, count = dedup_units(units)
    assert count == 0 and texts == [t for _, t in units]


def test_paragraphs_numbered_per_label_across_parts() -> None:
    units = [("message 1", "Intro."), ("message 1", f"Part two.\n\n{DOC}"), ("message 2", DOC)]
    texts, _ = dedup_units(units)
    assert texts[2] == "[same as the document in message 1, paragraph 3]"


def test_same_message_copy_is_deduped_and_first_kept() -> None:
    texts, count = dedup_units([("message 1", f"{DOC}\n\n{DOC}")])
    assert count == 1
    assert texts[0] == f"{DOC}\n\n[same as the document in message 1, paragraph 1]"


class FakeEmbedder:
    """Bag of words hashed into 64 dimensions, L2-normalised: similar text, similar vector."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        rows = np.zeros((len(texts), 64))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i, sum(map(ord, word)) % 64] += 1.0
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_near_copy_with_embedder() -> None:
    near = DOC.replace("thirty days", "30 days")
    embed = FakeEmbedder()
    texts, count = dedup_units([("message 1", DOC), ("message 2", near)], embed=embed, near_threshold=0.9)
    assert count == 1 and texts[1] == "[nearly the same as the document in message 1, paragraph 1]"
    assert len(embed.calls) == 1  # one batch for the whole conversation
    texts, count = dedup_units([("message 1", DOC), ("message 2", near)], embed=None)
    assert count == 0  # no embedder, no near-dup detection


def test_near_copy_needs_shared_words_too() -> None:
    # Same opening (all MiniLM would see), different second half: the lexical guard keeps it.
    other = DOC[:200] + " " + " ".join(f"clause{i} applies differently here" for i in range(40))
    always_similar = lambda texts: np.ones((len(texts), 4)) / 2.0  # noqa: E731
    _, count = dedup_units([("message 1", DOC), ("message 2", other)], embed=always_similar)
    assert count == 0
