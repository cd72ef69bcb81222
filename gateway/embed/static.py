"""Static sentence vectors (model2vec-style, distilled from MiniLM): a microsecond pre-filter for phase 4.

A text's vector is the mean of its WordPiece tokens' distilled vectors (rarity-weighted at
distillation), normalised: no transformer, numpy only. Too coarse to serve from, good enough to say
whether a partition holds anything near the query, so the 13 ms MiniLM embedding is only paid
when it might produce a hit. Built by `make distill-static` (benchmarks/quality/distill_static.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "static_minilm.npz"
TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "tokenizer.json"
# Below this static cosine to every entry, a partition holds nothing the MiniLM floor would pass for
# 95% of validation paraphrases (benchmarks/quality/results.md, "Static pre-filter").
DEFAULT_FLOOR = 0.755


class StaticEmbedder:
    def __init__(self, path: str | Path = MODEL_PATH, tokenizer_path: str | Path = TOKENIZER) -> None:
        from tokenizers import Tokenizer

        with np.load(path, allow_pickle=False) as z:
            self._vectors = z["vectors"].astype(np.float32) * z["scale"][:, None]
        self.dim = int(self._vectors.shape[1])
        tok = Tokenizer.from_file(str(tokenizer_path))
        tok.no_padding()
        tok.no_truncation()
        self._tokenizer = tok

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 unit rows (a text without tokens gets a zero row)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, enc in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            if enc.ids:
                v = self._vectors[enc.ids].mean(axis=0)
                n = float(np.linalg.norm(v))
                if n > 0:
                    out[i] = v / n
        return out
