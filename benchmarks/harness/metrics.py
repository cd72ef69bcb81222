"""Reads the gateway's Prometheus /metrics around a load level: counter deltas, cache-phase figures.

The benchmark does not depend on exact metric names: it keeps the deltas of every counter whose
name mentions the cache or the embedder, and derives embeddings per second and the share of
requests that got a phase-4 (semantic) lookup from whichever of them exist. Absent metrics give
absent figures, never an error.
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.harness.procs import http_ok

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")
_INTERESTING = ("cache", "embed", "semantic", "phase", "metacache")


def parse(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {"name{labels}": value}; comments and junk are skipped."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            samples[name + (labels or "")] = float(value)
        except ValueError:
            continue
    return samples


def scrape(base_url: str) -> dict[str, float] | None:
    status, body = http_ok(f"{base_url}/metrics", None, {}, timeout=3.0)
    return parse(body.decode(errors="replace")) if status == 200 else None


def deltas(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    """Increase of every cache/embedder counter (and histogram count) between two scrapes."""
    if before is None or after is None:
        return {}
    out = {}
    for key, value in after.items():
        name = key.split("{", 1)[0]
        if not any(word in name.lower() for word in _INTERESTING):
            continue
        if not (name.endswith("_total") or name.endswith("_count")):
            continue
        # Zero changes are kept: "no embeddings in this level" is a figure, not a missing one.
        out[key] = round(value - before.get(key, 0.0), 3)
    return out


def _labels(key: str) -> str:
    return key.split("{", 1)[1] if "{" in key else ""


def cache_figures(delta: dict[str, float], seconds: float, requests: int) -> dict[str, Any]:
    """Embeddings per second and phase-4 lookup share, when the metrics let us derive them."""
    figures: dict[str, Any] = {}
    embeds = [v for k, v in delta.items() if k.split("{", 1)[0] == "gateway_embeddings_total"] or [
        v
        for k, v in delta.items()
        if "embed" in k.split("{", 1)[0].lower()
        and not any(w in k.lower() for w in ("skip", "error", "fail", "bucket", "saturat", "refus"))
    ]
    if embeds and seconds > 0:
        figures["embeddings_per_s"] = round(max(embeds) / seconds, 1)
    skipped = [v for k, v in delta.items()
               if "embed" in k.lower() and any(w in k.lower() for w in ("skip", "saturat", "refus"))]
    if skipped:
        figures["embeddings_skipped"] = max(skipped)
    # Prefer the count of phase-4 lookups that really searched (embedding obtained); older
    # gateways only count attempts, skipped ones included.
    phase4 = [v for k, v in delta.items() if k.split("{", 1)[0] == "gateway_cache_semantic_searches_total"] or [
        v
        for k, v in delta.items()
        if ("lookup" in k.lower() and re.search(r'phase="?(4|semantic)"?', _labels(k)))
        or "semantic_lookup" in k.lower()
    ]
    # A search whose candidates the verifier had no budget for did not run phase 4 to its end.
    unjudged = sum(v for k, v in delta.items() if k.split("{", 1)[0] == "gateway_cache_unjudged_total"
                   and re.search(r'phase="?(4|semantic)"?', _labels(k)))
    if phase4 and unjudged:
        phase4 = [max(phase4) - unjudged]
        figures["phase4_unjudged"] = unjudged
    pairs = [v for k, v in delta.items() if k.split("{", 1)[0] == "gateway_verifier_pairs_total"]
    if pairs and phase4 and max(phase4) > 0:
        figures["verifier_pairs_per_lookup"] = round(max(pairs) / max(phase4), 2)
    ml = sum(v for k, v in delta.items() if k.split("{", 1)[0] == "gateway_ml_seconds_total")
    if ml and phase4 and max(phase4) > 0:  # embedding + verifier time, per phase-4 lookup that ran
        figures["ml_ms_per_lookup"] = round(ml * 1000.0 / max(phase4), 2)
    if phase4 and requests > 0:
        figures["phase4_lookups"] = max(phase4)
        figures["phase4_share"] = round(min(1.0, max(phase4) / requests), 4)
        if seconds > 0:
            figures["phase4_lookups_per_s"] = round(max(phase4) / seconds, 1)
    return figures
