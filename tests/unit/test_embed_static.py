"""The static (distilled) embedder: the shipped vectors load, rows are unit, paraphrases sit closer."""

from __future__ import annotations

import numpy as np

from gateway.embed.static import MODEL_PATH, StaticEmbedder


def test_shipped_static_vectors_load_and_rank_paraphrases_first() -> None:
    assert MODEL_PATH.exists() and MODEL_PATH.stat().st_size < 5_000_000
    se = StaticEmbedder()
    v = se.embed(["How do I reverse a list in Python?", "How can I reverse a Python list?",
                  "What is the capital of France?", ""])
    assert v.shape == (4, se.dim) and se.dim >= 32
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-5) and not v[3].any()
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
