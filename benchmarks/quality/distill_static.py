"""Distils static token vectors from the gateway's MiniLM (model2vec-style) for a cheap phase-4 pre-filter.

    make distill-static      # = python -m benchmarks.quality.distill_static

Every WordPiece token is run through the model alone ("[CLS] token [SEP]"), mean-pooled like a
sentence; the vectors are reduced by PCA and weighted by token rarity (SIF weights a / (a + p), p from
the training texts of benchmarks/quality/pairs.py, train split only). Writes
gateway/models/static_minilm.npz (int8 vectors + one scale per row) used by gateway/embed/static.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.quality.pairs import build  # noqa: E402
from gateway.embed.static import MODEL_PATH  # noqa: E402

DIMS = 96
SIF_A = 1e-3


def token_vectors(batch: int = 512) -> np.ndarray:
    from gateway.embed.session import Embedder

    emb = Embedder(intra_op_threads=2)  # an offline tool: it drives the embedder's own session
    vocab = emb._tokenizer.get_vocab_size()
    out = np.zeros((vocab, 384), np.float32)
    t0 = time.perf_counter()
    for start in range(0, vocab, batch):
        ids = np.arange(start, min(start + batch, vocab), dtype=np.int64)
        feeds = {"input_ids": np.stack([np.full(len(ids), 101), ids, np.full(len(ids), 102)], axis=1),
                 "attention_mask": np.ones((len(ids), 3), np.int64)}
        if "token_type_ids" in emb._input_names:
            feeds["token_type_ids"] = np.zeros((len(ids), 3), np.int64)
        states = emb._session.run([emb._output], feeds)[0]
        out[ids] = states.mean(axis=1)
    print(f"{vocab} tokens in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    from tokenizers import Tokenizer

    from gateway.embed.session import DEFAULT_TOKENIZER

    vecs = token_vectors()
    tok = Tokenizer.from_file(str(DEFAULT_TOKENIZER))
    counts = np.ones(len(vecs))
    train = [t for p in build() if p.split == "train" for t in (p.a, p.b)]
    for enc in tok.encode_batch(sorted(set(train)), add_special_tokens=False):
        np.add.at(counts, enc.ids, 1)
    p = counts / counts.sum()
    weights = SIF_A / (SIF_A + p)
    mean = vecs.mean(axis=0)
    _, _, vt = np.linalg.svd(vecs - mean, full_matrices=False)
    reduced = (vecs - mean) @ vt[:DIMS].T * weights[:, None]
    scale = np.abs(reduced).max(axis=1) / 127.0 + 1e-12
    q = np.round(reduced / scale[:, None]).astype(np.int8)
    with open(MODEL_PATH, "wb") as f:
        np.savez_compressed(f, vectors=q, scale=scale.astype(np.float32))
    print(f"wrote {MODEL_PATH} ({MODEL_PATH.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
