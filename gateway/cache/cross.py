"""The cross-encoder pair verifier: a six-layer MiniLM that reads query and candidate together.

A bi-encoder cosine cannot see which words of one question line up with which of the other; a
cross-encoder attends across both ("[CLS] query [SEP] candidate [SEP]") and says whether they ask
the same thing. Trained by the project (`make train-cross`, benchmarks/quality/train_cross.py) on
the train split of benchmarks/quality/pairs.py plus further Quora pairs; its acceptance curves are
measured on the validation split (`make eval-cross`, evaluate_cross.py) and ship beside the weights
in `pair_cross.npz`, so `cache.max_wrong_rate` picks the threshold that kept the bound there.

The model runs in the embedder's executor thread (one ML thread per worker, below the event loop's
priority), one batch per lookup: every candidate of a phase in one ONNX run. A lookup whose batch
would not fit its latency budget is not judged (a miss, counted), never queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.cache.classifier import PairModel, pick_threshold, recall_at, shipped_model
from gateway.cache.verify import Verdict, lexical_veto

log = logging.getLogger(__name__)

_MODELS = Path(__file__).resolve().parent.parent / "models"
CROSS_MODEL = _MODELS / "pair_cross.int8.onnx"
CROSS_META = _MODELS / "pair_cross.npz"
TOKENIZER = _MODELS / "tokenizer.json"
MAX_LEN = 64  # as trained: covers 95% of the pairs, longer ones are cut longest-first
PHASES = ("full", "near")
PROBE_INTERVAL_S = 1.0
_WARM_PAIRS = (  # a lookup's batch of typical length (18-25 tokens a question)
    ("How do I reverse a list in Python without changing the original?", "What is the way to reverse a Python list?"),
    ("What is the best way to learn to play the guitar as an adult?", "How can I learn guitar by myself?"),
    ("Is it safe to drink tap water in Mexico City hotels?", "Can you drink the tap water in Mexico?"),
    ("Why did Germany declare war on France in 1914?", "What caused the First World War to start?"),
)  # phase 4 (a cosine candidate), phase 2 (a near miss of the tokens)


class CrossModel:
    """ONNX session + tokenizer: logits for (query, candidate) pairs. Thread-safe."""

    def __init__(self, path: str | Path = CROSS_MODEL, tokenizer_path: str | Path = TOKENIZER,
                 *, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = False  # as the embedder: no arena keeping the largest batch's peak
        opts.enable_mem_pattern = False
        self.path = Path(path)
        self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(tokenizer_path))
        tok.enable_truncation(MAX_LEN, strategy="longest_first")
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest pair of the batch
        self._tok = tok

    def close(self) -> None:
        self._session = None

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, np.float32)
        encs = self._tok.encode_batch(list(pairs))
        feeds = {"input_ids": np.array([e.ids for e in encs], np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encs], np.int64)}
        return np.asarray(self._session.run(["logit"], feeds)[0], np.float32).reshape(-1)


@dataclass(frozen=True, slots=True)
class Curve:
    """What serving `logit >= t` did on validation pairs, for ascending thresholds t."""

    thresholds: np.ndarray
    wrong: np.ndarray
    recall: np.ndarray
    served: np.ndarray

    def threshold(self, max_wrong_rate: float) -> float:
        return pick_threshold(self.thresholds, self.wrong, self.served, max_wrong_rate)

    def recall_at(self, threshold: float) -> float:
        return recall_at(self.thresholds, self.recall, threshold)


CURVE_FIELDS = ("thresholds", "wrong", "recall", "served")


class CrossMeta:
    """The sidecar of the weights: cosine floor, veto rules, validation curves, the weights' hash."""

    def __init__(self, path: str | Path = CROSS_META) -> None:
        with np.load(path, allow_pickle=False) as z:
            self.cosine_floor = float(z["cosine_floor"])
            self.veto_rules = frozenset(str(x) for x in z["veto_rules"])
            self.model_sha256 = str(z["model_sha256"])
            # The decision score: the cross-encoder's logit, plus the MLP verifier's log-odds when
            # validation chose the sum (they err on different pairs).
            self.combine_mlp = bool(z["combine_mlp"]) if "combine_mlp" in z.files else False
            # Each phase may carry several curves (isolated pairs, a crowded partition): the
            # threshold must keep the bound on all of them.
            self.curves: dict[str, list[Curve]] = {}
            for name in z.files:
                if name.endswith("_thresholds"):
                    curve = name[: -len("_thresholds")]
                    phase = curve.split(":")[0]
                    self.curves.setdefault(phase, []).append(
                        Curve(*(z[f"{curve}_{f}"].astype(np.float64) for f in CURVE_FIELDS)))
        missing = [p for p in PHASES if p not in self.curves]
        if missing:
            raise ValueError(f"{path}: no validation curve for {missing}")

    def threshold(self, phase: str, max_wrong_rate: float) -> float:
        return max(c.threshold(max_wrong_rate) for c in self.curves[phase])


def cross_sidecar(model_path: str | Path) -> Path:
    """pair_cross.int8.onnx -> pair_cross.npz: the curves measured on those weights."""
    path = Path(model_path)
    return path.with_name(path.name.split(".")[0] + ".npz")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(slots=True)
class CrossStats:
    judged: int = 0  # candidates run through the model
    batches: int = 0
    over_budget: int = 0  # lookups whose candidates were not judged (the estimate exceeded the budget)
    truncated: int = 0  # lookups judged on their best candidates only (the rest would not fit)
    probes: int = 0  # over-budget lookups judged anyway, one a second, so the estimate can recover
    failed: int = 0
    seconds: float = 0.0  # wall time inside the model (the ML thread's work)


class CrossVerifier:
    """A MetaCache verifier: identity, the cosine floor, the guard's veto, then the cross-encoder."""

    kind = "cross"

    def __init__(self, model: CrossModel, meta: CrossMeta, max_wrong_rate: float = 0.01, *,
                 executor: Executor | None = None, budget_ms: float = 40.0, expected_ms: float = 4.0,
                 mlp: PairModel | None = None) -> None:
        if meta.combine_mlp and mlp is None:
            mlp = shipped_model()
        self.model = model
        self.meta = meta
        self._mlp = mlp if meta.combine_mlp else None
        self.max_wrong_rate = max_wrong_rate
        self.thresholds = {p: meta.threshold(p, max_wrong_rate) for p in PHASES}
        self.stats = CrossStats()
        self._executor = executor
        self._budget_ms = budget_ms
        self._ms_per_pair = expected_ms  # EWMA of wall time per judged pair: the budget estimate
        self._busy = 0  # pairs reserved or inside the model right now (any lookup)
        self._last_run = 0.0
        self._lock = threading.Lock()

    @classmethod
    def load_or_none(cls, max_wrong_rate: float = 0.01, *, model_path: str | Path = CROSS_MODEL,
                     meta_path: str | Path = CROSS_META, check_hash: bool = True,
                     **kwargs: object) -> CrossVerifier | None:
        """None (the caller falls back to the MLP verifier) when the weights can't be loaded."""
        try:
            meta = CrossMeta(meta_path)
            if check_hash and sha256(Path(model_path)) != meta.model_sha256:
                raise ValueError(f"{model_path} is not the model {meta_path} was measured on")
            model = CrossModel(model_path)
            model.logits([("warm up", "the session")])  # the first run allocates; not on a request
            # This machine's cost, measured at start-up: the budget's first estimate (a CPU without
            # VNNI runs the int8 model several times slower than one with it).
            t0 = time.perf_counter()
            model.logits(list(_WARM_PAIRS))
            measured = (time.perf_counter() - t0) * 1000.0 / len(_WARM_PAIRS)
            kwargs.setdefault("expected_ms", measured)
            ver = cls(model, meta, max_wrong_rate, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:  # missing file, wrong hash, ORT or MLP failure: all mean "no cross-encoder"
            log.warning("cross-encoder verifier unavailable, falling back: %s", exc)
            return None
        log.info("cross-encoder verifier loaded: %.1f ms per pair on this machine", measured)
        return ver

    @property
    def cosine_floor(self) -> float:
        return self.meta.cosine_floor

    def close(self) -> None:
        """Drop the ONNX session (its memory) when the worker chose another verifier."""
        self.model.close()

    @property
    def estimate_ms(self) -> float:
        return self._ms_per_pair

    def expected_recall(self) -> dict[str, float]:
        """Validation recall at the configured bound (the isolated curve), for /cache stats."""
        return {p: self.meta.curves[p][0].recall_at(t) for p, t in self.thresholds.items()}

    # ------------------------------------------------------------------ deciding

    def _prefilter(self, query: str, candidate: str, cosine: float | None) -> Verdict | None:
        if query == candidate:
            return Verdict(True, "ok", 1.0)
        if cosine is not None and cosine < self.meta.cosine_floor:
            return Verdict(False, "below_floor", cosine)
        veto = lexical_veto(query, candidate, self.meta.veto_rules)
        return Verdict(False, veto, 0.0) if veto else None

    def _scores(self, query: str, cands: Sequence[tuple[str, float | None]]) -> np.ndarray:
        """The decision scores of (query, candidate) pairs: model logits (+ the MLP's log-odds)."""
        scores = self.model.logits([(query, c) for c, _ in cands]).astype(np.float64)
        if self._mlp is not None:
            for i, (c, cos) in enumerate(cands):
                p = min(max(self._mlp.score(query, c, cos)[1], 1e-6), 1 - 1e-6)
                scores[i] += np.log(p / (1 - p))
        return scores

    def _decide(self, score: float, cosine: float | None) -> Verdict:
        phase = "full" if cosine is not None else "near"
        ok = score >= self.thresholds[phase]
        return Verdict(ok, "ok" if ok else f"cross:{phase}", float(score))

    def __call__(self, query: str, candidate: str, cosine: float | None) -> Verdict:
        """Synchronous, model inline (tools and evaluation; the request path uses `judge`)."""
        early = self._prefilter(query, candidate, cosine)
        if early is not None:
            return early
        return self._decide(float(self._scores(query, [(candidate, cosine)])[0]), cosine)

    async def judge(self, query: str, candidates: Sequence[tuple[str, float | None]]) -> list[Verdict] | None:
        """Verdicts for the first candidates (best first) whose batch fits the budget; None when not
        even one fits (the phase is a miss). Candidates past the returned verdicts were not judged."""
        verdicts: list[Verdict | None] = [self._prefilter(query, c, cos) for c, cos in candidates]
        todo = [i for i, v in enumerate(verdicts) if v is None]
        if not todo:
            return [v for v in verdicts if v is not None]
        wait_ms = 2 * self._budget_ms
        with self._lock:
            fit = int(self._budget_ms // max(self._ms_per_pair, 1e-3)) - self._busy
            # The estimate only moves when the model runs: refusing on it forever would keep the
            # near phases off long after a burst. An idle verifier takes one probe a second.
            if fit < 1 and self._busy == 0 and time.monotonic() - self._last_run > PROBE_INTERVAL_S:
                fit = 1
                wait_ms = 2 * max(self._budget_ms, self._ms_per_pair)  # a probe may cost the estimate
                self.stats.probes += 1
            if fit >= 1:
                self._last_run = time.monotonic()
                if fit < len(todo):
                    self.stats.truncated += 1
                    todo = todo[:fit]
                    verdicts = verdicts[: todo[-1] + 1]
                self._busy += len(todo)  # reserved now: lookups behind this one see it at once
        if fit < 1:
            self.stats.over_budget += 1
            return None
        pairs = [candidates[i] for i in todo]
        try:
            try:
                fut = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, query, pairs)
            except Exception:  # never started (an executor shut down): give the reservation back
                with self._lock:
                    self._busy -= len(pairs)
                raise
            # shield: a late batch still updates the estimate; this lookup stops waiting for it
            logits = await asyncio.wait_for(asyncio.shield(fut), wait_ms / 1000.0)
        except TimeoutError:
            self.stats.over_budget += 1
            return None
        except Exception as exc:  # a failed inference costs this lookup its near matches
            self.stats.failed += 1
            log.warning("cross-encoder failed, candidates refused: %s", exc)
            return None
        for i, score in zip(todo, logits, strict=True):
            verdicts[i] = self._decide(float(score), candidates[i][1])
        return [v for v in verdicts if v is not None]

    def _timed(self, query: str, pairs: list[tuple[str, float | None]]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._scores(query, pairs)
        finally:
            elapsed = time.perf_counter() - t0
            per_pair = elapsed * 1000.0 / len(pairs)
            with self._lock:
                self._busy -= len(pairs)
                self._ms_per_pair = (per_pair if per_pair < self._ms_per_pair / 2
                                     else 0.8 * self._ms_per_pair + 0.2 * per_pair)
                self.stats.judged += len(pairs)
                self.stats.batches += 1
                self.stats.seconds += elapsed


def _check() -> int:
    """`python -m gateway.cache.cross`: the shipped weights load, match their curves, and judge (the image build)."""
    ver = CrossVerifier.load_or_none()
    if ver is None:
        print("cross-encoder verifier: FAILED to load (see the warning above)")
        return 1
    ok = ver("How do I reverse a list in Python?", "How do I reverse a list in Python?", 1.0).ok
    print(f"cross-encoder verifier: {ver.model.path.name}, {ver.estimate_ms:.1f} ms per pair, thresholds "
          + ", ".join(f"{p} {t:.3f}" for p, t in ver.thresholds.items()))
    return 0 if ok and np.isfinite(ver.thresholds["full"]) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(_check())
