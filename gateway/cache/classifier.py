"""The learned pair verifier: a tiny MLP over frozen MiniLM features and the lexical guard's signals.

Cosine says two questions are about the same thing; whether they *ask* the same thing is learned
from labelled pairs (`benchmarks/quality/train_verifier.py`, `make train-verifier`): for phase 4 the
full head sees the MiniLM cosine and the guard's signals (SIGNALS in verify.py); for phase 2, which
has no embedding, the lexical head sees the signals alone. (|u-v| and u*v, whole or projected to
16-64 dimensions, were tried and did worse on validation: docs/cache-verifier.md.) Both ship in
`gateway/models/pair_verifier.npz` with the wrong-rate curve each head showed on validation pairs,
so the acceptance threshold is the one that kept served answers wrong at most `max_wrong_rate` of
the time there. numpy only; a candidate costs tens of microseconds.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.cache.verify import SIGNALS, Verdict, lexical_veto, signals

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "pair_verifier.npz"
HEADS = ("full", "lex")
MIN_SERVED = 30  # a curve point backed by fewer validation hits is too noisy to pick


FULL_FEATURES = 2 + len(SIGNALS)


def full_features(sig: np.ndarray, cos: np.ndarray | float) -> np.ndarray:
    """(n, FULL_FEATURES) rows: cosine, its square, the signals."""
    c = np.atleast_1d(np.asarray(cos, dtype=np.float32))[:, None]
    return np.concatenate([c, c * c, np.atleast_2d(sig).astype(np.float32)], axis=1)


def lex_features(sig: np.ndarray) -> np.ndarray:
    return np.atleast_2d(sig).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Head:
    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray  # (hidden,)
    b2: float
    thresholds: np.ndarray  # validation curve, ascending thresholds
    wrong: np.ndarray  # share of served validation pairs that were not paraphrases, at each threshold
    recall: np.ndarray  # share of validation paraphrases served, at each threshold
    served: np.ndarray  # validation pairs served, at each threshold

    def prob(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum((x - self.mean) / self.std @ self.w1 + self.b1, 0.0)
        z = h @ self.w2 + self.b2
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))

    def threshold(self, max_wrong_rate: float) -> float:
        return pick_threshold(self.thresholds, self.wrong, self.served, max_wrong_rate)

    def recall_at(self, threshold: float) -> float:
        return recall_at(self.thresholds, self.recall, threshold)


def pick_threshold(thresholds: np.ndarray, wrong: np.ndarray, served: np.ndarray, max_wrong_rate: float) -> float:
    """The lowest threshold at and above which every (well-populated) curve point kept the bound."""
    ok = (wrong <= max_wrong_rate) | (served < MIN_SERVED)
    # Scan from the strictest threshold down; stop at the first point that broke the bound.
    best = np.inf
    for i in range(len(thresholds) - 1, -1, -1):
        if not ok[i]:
            break
        if served[i] >= MIN_SERVED:
            best = float(thresholds[i])
    return best


def recall_at(thresholds: np.ndarray, recall: np.ndarray, threshold: float) -> float:
    i = int(np.searchsorted(thresholds, threshold))
    return float(recall[i]) if i < len(recall) else 0.0


def _head(z: np.lib.npyio.NpzFile, h: str) -> Head:
    f32 = {f: z[f"{h}_{f}"].astype(np.float32) for f in ("mean", "std", "w1", "b1", "w2")}
    return Head(f32["mean"], f32["std"], f32["w1"], f32["b1"], f32["w2"], float(z[f"{h}_b2"]),
                z[f"{h}_thresholds"], z[f"{h}_wrong"], z[f"{h}_recall"], z[f"{h}_served"])


class PairModel:
    """The shipped weights and curves (see the module docstring)."""

    def __init__(self, path: str | Path = MODEL_PATH) -> None:
        with np.load(path, allow_pickle=False) as z:
            names = [str(x) for x in z["signals"]]
            if names != list(SIGNALS):
                raise ValueError(f"{path}: trained on signals {names}, this verifier computes {list(SIGNALS)}")
            self.heads = {h: _head(z, h) for h in HEADS}
            self.cosine_floor = float(z["cosine_floor"])
            self.veto_rules = frozenset(str(x) for x in z["veto_rules"])
        if self.heads["full"].w1.shape[0] != FULL_FEATURES:
            raise ValueError(f"{path}: full head expects {self.heads['full'].w1.shape[0]} features")

    def score(self, query: str, candidate: str, cosine: float | None) -> tuple[str, float]:
        """(head used, probability that the two ask the same thing); no cosine: the lexical head."""
        sig = np.asarray(signals(query, candidate), dtype=np.float32)
        if cosine is not None:
            return "full", float(self.heads["full"].prob(full_features(sig, cosine))[0])
        return "lex", float(self.heads["lex"].prob(lex_features(sig))[0])


@functools.cache
def shipped_model() -> PairModel:
    return PairModel(MODEL_PATH)


class LearnedVerifier:
    """A MetaCache verifier: the guard's fast veto, the cosine floor, then the classifier."""

    kind = "learned"

    def __init__(self, model: PairModel, max_wrong_rate: float = 0.01) -> None:
        self.model = model
        self.max_wrong_rate = max_wrong_rate
        self.thresholds = {h: model.heads[h].threshold(max_wrong_rate) for h in HEADS}

    @classmethod
    def load_or_none(cls, max_wrong_rate: float = 0.01, path: str | Path | None = None) -> LearnedVerifier | None:
        """None (the caller keeps the rule-based verifier) when the weights can't be loaded."""
        try:
            model = shipped_model() if path is None else PairModel(path)
        except Exception as exc:  # a missing or incompatible file means the same thing here
            log.warning("pair verifier unavailable, falling back to the lexical rules: %s", exc)
            return None
        return cls(model, max_wrong_rate)

    @property
    def cosine_floor(self) -> float:
        """Phase 4 passes neighbours at or above this cosine to the classifier (recall-oriented)."""
        return self.model.cosine_floor

    def expected_recall(self) -> dict[str, float]:
        """Validation recall each head keeps at the configured bound (for docs and /cache stats)."""
        return {h: self.model.heads[h].recall_at(t) for h, t in self.thresholds.items()}

    def __call__(self, query: str, candidate: str, cosine: float | None) -> Verdict:
        if query == candidate:
            return Verdict(True, "ok", 1.0)
        if cosine is not None and cosine < self.model.cosine_floor:
            return Verdict(False, "below_floor", cosine)
        veto = lexical_veto(query, candidate, self.model.veto_rules)
        if veto:
            return Verdict(False, veto, 0.0)
        head, p = self.model.score(query, candidate, cosine)
        ok = p >= self.thresholds[head]
        return Verdict(ok, "ok" if ok else f"classifier:{head}", p)
