"""The learned pair verifier: the shipped weights load, the bound picks the threshold, the guard vetoes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.cache.classifier import (
    FULL_FEATURES,
    MODEL_PATH,
    Head,
    LearnedVerifier,
    PairModel,
    full_features,
    shipped_model,
)
from gateway.cache.verify import SIGNALS, signals


def test_the_shipped_file_loads_and_is_small() -> None:
    assert MODEL_PATH.exists() and MODEL_PATH.stat().st_size < 2_000_000
    assert (MODEL_PATH.parent / "pair_verifier.NOTICE.md").exists()
    model = shipped_model()
    full, lex = model.heads["full"], model.heads["lex"]
    assert full.w1.shape[0] == FULL_FEATURES and lex.w1.shape[0] == len(SIGNALS)
    assert 0.3 <= model.cosine_floor < 0.90  # recall-oriented: well below the plain threshold
    assert {"number", "negation"} <= model.veto_rules
    ver = LearnedVerifier(model, 0.01)
    assert 0 < ver.thresholds["full"] < 1 and 0 < ver.expected_recall()["full"] <= 1
    # The lexical head may find no threshold that keeps 1% (then phase 2 serves nothing through it).
    assert ver.thresholds["lex"] > 0
    assert all(np.isfinite(t) for t in LearnedVerifier(model, 0.2).thresholds.values())


def test_a_looser_bound_never_raises_the_threshold() -> None:
    model = shipped_model()
    strict, loose = LearnedVerifier(model, 0.005), LearnedVerifier(model, 0.05)
    for head in ("full", "lex"):
        assert loose.thresholds[head] <= strict.thresholds[head]
        recall = model.heads[head].recall_at
        assert recall(loose.thresholds[head]) >= recall(strict.thresholds[head])


def _head(wrong: list[float], served: list[int]) -> Head:
    n = len(wrong)
    z = np.zeros(1, np.float32)
    return Head(z, z + 1, np.zeros((1, 1), np.float32), z, z, 0.0, np.linspace(0.1, 0.9, n), np.array(wrong),
                np.linspace(0.9, 0.1, n), np.array(served))


def test_threshold_is_the_lowest_point_whose_stricter_points_all_kept_the_bound() -> None:
    # thresholds 0.1 .. 0.9; wrong falls as the threshold rises, with a bump at 0.5
    head = _head([0.2, 0.05, 0.009, 0.02, 0.008, 0.005, 0.004, 0.0, 0.0], [900, 800, 700, 600, 500, 400, 300, 200, 100])
    assert head.threshold(0.01) == pytest.approx(0.5)  # not 0.3: the point above it (0.4) broke the bound
    assert head.threshold(0.05) == pytest.approx(0.2)
    assert head.threshold(0.0) == pytest.approx(0.8)


def test_sparse_curve_points_neither_pick_nor_block() -> None:
    head = _head([0.5, 0.001, 0.3, 0.0], [500, 400, 10, 5])  # the two strictest points served too few
    assert head.threshold(0.01) == pytest.approx(0.1 + 0.8 / 3)
    assert _head([0.5, 0.5], [5, 5]).threshold(0.01) == np.inf  # nothing to pick: serve nothing


def test_the_guard_vetoes_before_the_classifier_and_the_floor_refuses() -> None:
    ver = LearnedVerifier(shipped_model(), 0.01)
    assert ver("How to sort a list", "How to not sort a list", None).reason == "negation"
    assert ver("Give me 3 ideas for a party", "Give me 5 ideas for a party", None).reason == "number_mismatch"
    v = ver("How do I bake bread?", "How do I bake a cake?", ver.cosine_floor - 0.01)
    assert (v.ok, v.reason) == (False, "below_floor")
    assert ver("same text", "same text", 0.2).ok


def test_phase2_lexical_head_ranks_rewordings_above_changed_questions() -> None:
    model = shipped_model()
    head, rewording = model.score("What is the boiling point of water at sea level?",
                                  "What is the boiling point of the water at sea level?", None)
    _, other = model.score("What is the boiling point of water at sea level?",
                           "What is the melting point of iron in a furnace?", None)
    assert head == "lex" and rewording > other
    loose = LearnedVerifier(model, 0.2)
    assert loose("What is the boiling point of water at sea level?",
                 "What is the boiling point of the water at sea level?", None).ok
    assert not loose("How do I enable SSH on Ubuntu?", "How do I disable SSH on Ubuntu?", None).ok


def test_full_head_rises_with_the_cosine() -> None:
    model = shipped_model()
    q, c = "What is the best way to learn guitar?", "How can I learn to play the guitar?"
    scores = [model.score(q, c, cos) for cos in (0.70, 0.85, 0.97)]
    assert [h for h, _ in scores] == ["full"] * 3
    assert scores[0][1] < scores[1][1] < scores[2][1]
    x = full_features(np.asarray(signals(q, c)), 0.5)
    assert x.shape == (1, FULL_FEATURES) and x[0, 0] == pytest.approx(0.5) and x[0, 1] == pytest.approx(0.25)


def test_signals_are_symmetric() -> None:
    pairs = [("How do I enable SSH on Ubuntu 20?", "how can i disable ssh on ubuntu"),
             ("Best way to learn Spanish", "Best way to learn Spanish for free in 2 weeks")]
    for a, b in pairs:
        assert signals(a, b) == pytest.approx(signals(b, a))


def test_an_incompatible_file_falls_back(tmp_path: Path) -> None:
    with np.load(MODEL_PATH) as z:
        data = {k: z[k] for k in z.files}
    data["signals"] = np.array(["something", "else"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    with pytest.raises(ValueError, match="signals"):
        PairModel(bad)
    assert LearnedVerifier.load_or_none(path=bad) is None
    assert LearnedVerifier.load_or_none(path=tmp_path / "missing.npz") is None
