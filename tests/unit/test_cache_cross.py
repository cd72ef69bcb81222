"""The cross-encoder pair verifier: the shipped weights load and judge, the budget holds, a bad file falls back."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.classifier import LearnedVerifier
from gateway.cache.cross import CROSS_META, CROSS_MODEL, CrossMeta, CrossVerifier, sha256
from gateway.embed.session import Embedder

BOUND = 0.05  # where `verifier_model: auto` takes the cross-encoder (at 1% the MLP serves more on validation)


@pytest.fixture(scope="module")
def cross() -> CrossVerifier:
    ver = CrossVerifier.load_or_none(BOUND)
    assert ver is not None
    return ver


def fresh(cross: CrossVerifier, **kwargs: float) -> CrossVerifier:
    """The same loaded model and curves with its own budget state."""
    return CrossVerifier(cross.model, cross.meta, BOUND, **kwargs)


def test_the_shipped_files_belong_together(cross: CrossVerifier) -> None:
    assert sha256(CROSS_MODEL) == CrossMeta(CROSS_META).model_sha256
    assert (CROSS_MODEL.parent / "pair_cross.NOTICE.md").exists()
    assert 0.0 <= cross.cosine_floor < 0.9  # recall-oriented: below the plain threshold
    strict = CrossVerifier(cross.model, cross.meta, 0.01)
    assert np.isfinite(strict.thresholds["full"])  # phase 4 can serve even at the default bound
    assert 0 < strict.expected_recall()["full"] < cross.expected_recall()["full"] <= 1
    assert all(strict.thresholds[p] >= cross.thresholds[p] for p in cross.thresholds)
    # At 1% the MLP keeps more validation recall (so auto takes it); from 5% the cross-encoder.
    mlp = LearnedVerifier.load_or_none(0.01)
    mlp5 = LearnedVerifier.load_or_none(BOUND)
    assert mlp is not None and mlp5 is not None
    assert strict.expected_recall()["full"] < mlp.expected_recall()["full"]
    assert cross.expected_recall()["full"] > mlp5.expected_recall()["full"]


PARAPHRASES = [
    ("Explain how photosynthesis works", "How does photosynthesis work?"),
    ("Explain how a rainbow forms", "How does a rainbow form?"),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
]
CHANGED = [  # one number, negation, entity, unit, role or purpose changed: another question
    ("How do I reverse a list in Python?", "How do I reverse a list in Java?"),
    ("Is it safe to drink tap water in Mexico?", "Is it not safe to drink tap water in Mexico?"),
    ("What is 15% of 200?", "What is 25% of 200?"),
    ("How many miles is a marathon?", "How many kilometers is a marathon?"),
    ("Why did Germany declare war on France?", "Why did France declare war on Germany?"),
    ("What is the best laptop for programming?", "What is the best laptop for gaming?"),
]
# Candidates no guard rule refuses: the model itself runs on each.
RUN = ["How does photosynthesis work?", "What do plants do with sunlight?", "Why are leaves green?",
       "How do plants make food?", "What is chlorophyll?"]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    emb = Embedder()
    yield emb
    emb.close()


def cosine(embedder: Embedder, a: str, b: str) -> float:
    u, v = embedder.embed([a, b])
    return float(u @ v)


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_are_served(cross: CrossVerifier, embedder: Embedder, a: str, b: str) -> None:
    verdict = cross(a, b, cosine(embedder, a, b))
    assert verdict.ok, verdict


@pytest.mark.parametrize(("a", "b"), CHANGED)
def test_changed_questions_are_refused(cross: CrossVerifier, embedder: Embedder, a: str, b: str) -> None:
    assert not cross(a, b, cosine(embedder, a, b)).ok


def test_the_score_adds_the_mlp_when_validation_chose_it(cross: CrossVerifier) -> None:
    a, b = PARAPHRASES[0]
    logit = float(cross.model.logits([(a, b)])[0])
    assert cross.meta.combine_mlp  # what make eval-cross chose on validation (results-cross.md)
    mlp = LearnedVerifier.load_or_none(BOUND)
    assert mlp is not None
    p = mlp.model.score(a, b, 0.95)[1]
    assert cross(a, b, 0.95).score == pytest.approx(logit + np.log(p / (1 - p)), rel=1e-4)


def test_prefilter_identity_and_floor(cross: CrossVerifier) -> None:
    assert cross("same text", "same text", 0.3).ok
    below = cross(*PARAPHRASES[0], cross.cosine_floor - 0.01)
    assert not below.ok and below.reason == "below_floor"


def _cands(embedder: Embedder, query: str) -> list[tuple[str, float | None]]:
    """RUN above the floor (their real cosines are lower: this is about the batch, not the decision)."""
    return [(c, max(0.9, cosine(embedder, query, c))) for c in RUN]


async def test_judge_agrees_with_the_inline_call(cross: CrossVerifier, embedder: Embedder) -> None:
    ver = fresh(cross, budget_ms=10_000)
    query = PARAPHRASES[0][0]
    cands = [*_cands(embedder, query), (query, 0.99), (CHANGED[1][1], 0.9), ("How do plants breathe?", None)]
    verdicts = await ver.judge(query, cands)
    assert verdicts is not None and len(verdicts) == len(cands)
    assert [v.ok for v in verdicts] == [cross(query, c, cos).ok for c, cos in cands]
    assert verdicts[0].ok and not verdicts[-1].ok  # phase 2's threshold for the last (no cosine)
    assert ver.stats.batches == 1 and ver.stats.judged == len(RUN) + 1  # identity and veto not run


async def test_the_budget_truncates_then_refuses_then_probes(cross: CrossVerifier, embedder: Embedder) -> None:
    query = PARAPHRASES[0][0]
    cands = _cands(embedder, query)
    ver = fresh(cross, budget_ms=25.0, expected_ms=10.0)  # room for two pairs at the first estimate
    verdicts = await ver.judge(query, cands)
    assert verdicts is not None and len(verdicts) == 2 and ver.stats.truncated == 1 and ver.stats.judged == 2
    ver = fresh(cross, budget_ms=0.5, expected_ms=1000.0)  # room for none: one probe, then refusals
    first = await ver.judge(query, cands)
    assert first is not None and len(first) == 1 and ver.stats.probes == 1
    assert await ver.judge(query, cands) is None and ver.stats.over_budget == 1
    assert ver.estimate_ms < 1000.0  # the probe measured the model: the estimate can recover


async def test_many_lookups_at_once_share_the_budget(cross: CrossVerifier, embedder: Embedder) -> None:
    ver = fresh(cross, budget_ms=40.0, expected_ms=10.0)  # four pairs in flight at a time
    query = PARAPHRASES[0][0]
    cands = _cands(embedder, query)
    results = await asyncio.gather(*(ver.judge(query, cands) for _ in range(6)))
    # The first lookup reserves four pairs; the ones that start before it finishes find no room.
    assert results[0] is not None and len(results[0]) == 4
    assert ver.stats.over_budget >= 1 and sum(r is None for r in results) == ver.stats.over_budget


def test_a_file_that_does_not_match_falls_back(tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    shutil.copyfile(CROSS_MODEL, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    assert CrossVerifier.load_or_none(model_path=other) is None  # not the weights the curves are for
    assert CrossVerifier.load_or_none(model_path=tmp_path / "missing.onnx", check_hash=False) is None
    assert CrossVerifier.load_or_none(meta_path=tmp_path / "missing.npz") is None


def test_metrics_show_the_verifier_and_the_ml_time() -> None:
    from types import SimpleNamespace

    from gateway.cache.cross import CrossStats
    from gateway.cache.types import CacheStats
    from gateway.embed.session import EmbedStats
    from gateway.observe.metrics import Metrics
    from gateway.observe.observer import Sources, _cache_gauges

    stats = CacheStats()
    stats.phases[4].unjudged = 3
    cache = SimpleNamespace(stats=stats, verifier=SimpleNamespace(stats=CrossStats(judged=7, probes=1, seconds=0.25)),
                            embedder=SimpleNamespace(stats=EmbedStats(embedded=4, seconds=0.5)), index=None)
    m = Metrics()
    _cache_gauges(m, Sources({}, None, cache, lambda: 0.0))  # type: ignore[arg-type]
    c = m.extra_counters
    assert c["gateway_ml_seconds_total"].values == {("verifier",): 0.25, ("embedding",): 0.5}
    assert c["gateway_verifier_pairs_total"].values[()] == 7.0
    assert c["gateway_cache_unjudged_total"].values[("semantic",)] == 3.0
