"""Embeds texts once with the gateway's own MiniLM embedder and caches the vectors (gitignored).

    vecs = embeddings(texts)        # (n, 384) float32 in the order given; computes what is missing
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import xxhash

CACHE = Path(__file__).resolve().parent / "data" / "cache"
CHUNK = 2048  # texts per saved shard: an interrupted run resumes at the last shard


def _key(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))


def _load() -> dict[int, np.ndarray]:
    store: dict[int, np.ndarray] = {}
    for f in sorted(CACHE.glob("shard-*.npz")):
        z = np.load(f)
        for k, v in zip(z["keys"], z["vecs"], strict=True):
            store[int(k)] = v
    return store


def embeddings(texts: list[str], threads: int = 2) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    store = _load()
    missing = sorted({t for t in texts if _key(t) not in store}, key=len)
    if missing:
        from gateway.embed.session import Embedder

        emb = Embedder(intra_op_threads=threads)
        t0 = time.perf_counter()
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            vecs = np.concatenate([emb.embed(chunk[i : i + 32]) for i in range(0, len(chunk), 32)])
            keys = np.array([_key(t) for t in chunk], dtype=np.uint64)
            np.savez(CACHE / f"shard-{xxhash.xxh64_hexdigest(keys.tobytes())}.npz", keys=keys, vecs=vecs)
            for k, v in zip(keys, vecs, strict=True):
                store[int(k)] = v
            done = start + len(chunk)
            print(f"embedded {done}/{len(missing)} ({(time.perf_counter() - t0) / done * 1000:.1f} ms/text)",
                  file=sys.stderr, flush=True)
    return np.stack([store[_key(t)] for t in texts]).astype(np.float32)


if __name__ == "__main__":
    from benchmarks.quality.pairs import build, texts

    print(embeddings(texts(build())).shape)
