"""The per-worker vector index (gateway/cache/semantic.py) as it grows: memory per 100k entries, KNN time.

Fills the gateway's own `_Partition` (the float32 matrix and member table that `VectorIndex` keeps per
partition, 384 dimensions) with random unit vectors (KNN time and memory do not depend on the
content) and reports the memory they hold (the matrices as allocated, rows growing by doubling, plus
the member table and strings; and the resident-set growth, which counts only rows written), and
the median / p99 wall time of one KNN (k=4, `_Partition.knn`: one matrix-vector product and an
argpartition) for two layouts: one partition of N entries (the worst case: one tenant, one system
prompt) and N entries over partitions of 100 (many tenants; a worker mirrors at most 1,024 partitions,
`VectorIndex(max_partitions=1024)`, so past ~100k entries in that layout it reloads from the store).
Run with one BLAS thread (`OPENBLAS_NUM_THREADS=1`, as `python -m benchmarks.cluster` does): a worker
per core.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.cluster.vector_index [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.semantic import DIM, _Partition

CHUNK = 50_000  # vectors generated at a time (1M at once would be another 1.5 GB)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vecs = rng.standard_normal((n, DIM), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def fill(n: int, per_partition: int, rng: np.random.Generator) -> list[_Partition]:
    parts: list[_Partition] = []
    part = _Partition()
    done = 0
    while done < n:
        vecs = _unit(rng, min(CHUNK, n - done))
        for v in vecs:
            if len(part.members) == per_partition:
                parts.append(part)
                part = _Partition()
            part.add(f"{done:032x}{done:064x}", v)  # members are 96-char exact keys
            done += 1
    parts.append(part)
    return parts


def accounted_bytes(parts: list[_Partition]) -> int:
    """What the partitions hold: the matrices as allocated (rows grow by doubling) plus the member
    list, the member -> row dict and the member strings."""
    total = 0
    for p in parts:
        total += p.matrix.nbytes + sys.getsizeof(p.members) + sys.getsizeof(p.rows) + sys.getsizeof(p)
        total += sum(sys.getsizeof(m) for m in p.members)
    return total


def knn_ms(parts: list[_Partition], rng: np.random.Generator, runs: int) -> tuple[float, float]:
    queries = _unit(rng, runs)
    times = []
    for i in range(runs):
        part = parts[i % len(parts)]
        t0 = time.perf_counter()
        part.knn(queries[i], 4, 0.9)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.99) - 1)]


def measure(sizes: list[int], log: Any = None) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    rows = []
    for n in sizes:
        for per in (n, 100):
            gc.collect()
            before = _rss_mb()
            t0 = time.monotonic()
            parts = fill(n, per, rng)
            filled = time.monotonic() - t0
            grown = _rss_mb() - before
            allocated = accounted_bytes(parts) / 2**20
            runs = 200 if n * DIM * 4 / max(1, len(parts)) < 2**28 else 40  # fewer of the 1.5 GB scans
            p50, p99 = knn_ms(parts, rng, runs)
            row = {"entries": n, "per_partition": per, "partitions": len(parts), "rss_mb": round(grown, 1),
                   "rss_mb_per_100k": round(grown * 100_000 / n, 1), "allocated_mb": round(allocated, 1),
                   "allocated_mb_per_100k": round(allocated * 100_000 / n, 1),
                   "knn_p50_ms": round(p50, 3), "knn_p99_ms": round(p99, 3), "knn_runs": runs,
                   "fill_s": round(filled, 1)}
            rows.append(row)
            if log is not None:
                log(f"vector index: {n:,} entries, partitions of {per:,}: {grown:,.0f} MB resident "
                    f"({allocated:,.0f} MB allocated), KNN p50 {p50:.3f} ms, p99 {p99:.3f} ms")
            del parts
    return {"dim": DIM, "dtype": "float32", "k": 4, "numpy": np.__version__,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--out", default="", help="write the JSON here as well")
    args = ap.parse_args()
    doc = measure([int(s) for s in args.sizes.split(",")], log=lambda s: print(s, file=sys.stderr, flush=True))
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
