"""The per-worker vector index (cache/semantic.py) as it grows: memory per 100k entries, KNN time.

Fills `_Partition`s with random unit vectors (KNN time and memory do not depend on the content) and
reports the resident memory they add and the median / p99 time of one KNN (k=4), for one partition
of N entries (the worst case: one tenant, one system prompt) and for N entries over partitions of
100 (many tenants). Run: `python -m benchmarks.vector_index [--sizes 10000,100000]`; prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time

import numpy as np

from gateway.cache.semantic import DIM, _Partition


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _fill(n: int, per_partition: int, rng: np.random.Generator) -> list[_Partition]:
    parts: list[_Partition] = []
    for start in range(0, n, per_partition):
        part = _Partition()
        vecs = rng.standard_normal((min(per_partition, n - start), DIM), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for i, v in enumerate(vecs):
            part.add(f"{start + i:032x}{start + i:064x}", v)  # members are 96-char exact keys
        parts.append(part)
    return parts


def _knn_ms(parts: list[_Partition], rng: np.random.Generator, runs: int = 200) -> tuple[float, float]:
    times = []
    for i in range(runs):
        q = rng.standard_normal(DIM, dtype=np.float32)
        q /= np.linalg.norm(q)
        part = parts[i % len(parts)]
        t0 = time.perf_counter()
        part.knn(q, 4, 0.9)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    out = []
    for n in (int(s) for s in args.sizes.split(",")):
        for per in (n, 100):
            gc.collect()
            before = _rss_mb()
            parts = _fill(n, per, rng)
            grown = _rss_mb() - before
            p50, p99 = _knn_ms(parts, rng)
            out.append({"entries": n, "per_partition": per, "rss_mb": round(grown, 1),
                        "mb_per_100k": round(grown * 100_000 / n, 1), "knn_p50_ms": round(p50, 3),
                        "knn_p99_ms": round(p99, 3)})
            del parts
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
