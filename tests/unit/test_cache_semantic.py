"""The in-memory partition matrix behind phase 4."""

from __future__ import annotations

import numpy as np

from gateway.cache.semantic import DIM, _Partition, as_vector


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_knn_grows_removes_and_ranks() -> None:
    part = _Partition()
    vecs = {f"m{i}": unit(i) for i in range(40)}  # more than the initial 16 rows
    for member, vec in vecs.items():
        part.add(member, vec)
    assert part.knn(vecs["m7"], k=4, threshold=0.99) == [("m7", part.knn(vecs["m7"], 1, 0.0)[0][1])]
    near = (vecs["m3"] + 0.05 * vecs["m4"]) / np.linalg.norm(vecs["m3"] + 0.05 * vecs["m4"])
    ranked = part.knn(near, k=3, threshold=-1.0)
    assert ranked[0][0] == "m3" and ranked[1][0] == "m4" and ranked[0][1] > ranked[1][1]
    part.remove("m3")
    part.remove("m39")  # the last row
    part.remove("absent")
    assert len(part.members) == 38 and "m3" not in part.rows
    assert part.knn(near, k=1, threshold=-1.0)[0][0] == "m4"
    for member, row in part.rows.items():  # the moved rows still point at their vectors
        assert np.allclose(part.matrix[row], vecs[member])
    assert _Partition().knn(near, 4, 0.0) == []


def test_as_vector_rejects_wrong_shapes() -> None:
    assert as_vector(unit(1).tobytes()) is not None
    assert as_vector(b"\x00" * 12) is None
