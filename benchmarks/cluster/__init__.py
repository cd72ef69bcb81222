"""`make bench-cluster`: the capacity plan's measurements (docs/scale.md).

    store_ops.py       store commands and round trips per request, by path, on a local Redis Cluster
    redis_capacity.py  one redis-server's commands/s (redis-benchmark) and CPU per command, for the
                       commands those paths use
    vector_index.py    the per-worker vector index: memory per 100k entries, KNN time at 10k-1M
    __main__.py        runs the three and writes results.md / results.json here
"""
