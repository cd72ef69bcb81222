"""Benchmark result files: writing them, and `gateway bench compare` (a table of deltas).

Both result shapes compare: a `gateway bench` run and a `make bench` results file. Each file is
flattened to numeric leaves keyed by path; a list of objects that carry a "key" field is indexed by
that key rather than by position, so "targets.gateway.levels[overhead@500rps].latency_ms.p50" lines
up between two runs even when one of them skipped a level.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

# Metrics where a larger number is better; for everything else (latency, errors, CPU, memory)
# smaller is better.
_HIGHER_IS_BETTER = ("rps", "ok", "success_rate", "hit_rate", "hits", "embeddings_per_s", "phase4_share")


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON, atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.format(msgspec.json.encode(data), indent=2))
        fh.write(b"\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a result file is for everyone
    os.replace(tmp, target)
    return target


def read_json(path: str | Path) -> Any:
    return msgspec.json.decode(Path(path).read_bytes())


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves of a JSON document as (path, value); booleans are not numbers here."""
    if isinstance(data, bool):
        return
    if isinstance(data, int | float):
        yield prefix, float(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            label = value.get("key", index) if isinstance(value, dict) else index
            yield from flatten(value, f"{prefix}[{label}]")


# Counts and settings that are neither better nor worse when they change.
_NEUTRAL = ("requests", "requests_total", "value", "started_unix", "duration_s", "schema", "conns_opened")


def higher_is_better(path: str) -> bool | None:
    """True/False for a figure with a direction, None for a neutral count or setting."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _NEUTRAL or "status_counts" in path:
        return None
    return leaf in _HIGHER_IS_BETTER or leaf.endswith("_rps")


class Delta(msgspec.Struct):
    path: str
    a: float
    b: float
    change: float
    percent: float | None
    better: bool | None  # None when the value did not change


def compare(a: Any, b: Any, only: str | None = None) -> list[Delta]:
    """Every numeric leaf present in both documents, in `a`'s order; `only` filters by substring."""
    right = dict(flatten(b))
    deltas = []
    for path, va in flatten(a):
        if path not in right or (only and only not in path):
            continue
        vb = right[path]
        change = vb - va
        percent = round(change / va * 100, 1) if va else None
        direction = higher_is_better(path)
        better = None if change == 0 or direction is None else (change > 0) == direction
        deltas.append(Delta(path, va, vb, round(change, 3), percent, better))
    return deltas


_SKIP_LEAVES = ("count", "schema", "started_unix", "connections", "rate", "duration_s", "warmup_s")


def render_table(deltas: list[Delta], name_a: str, name_b: str, show_all: bool = False) -> str:
    """A plain-text table; by default only leaves that changed, without bookkeeping fields."""
    rows = [d for d in deltas if (show_all or d.change != 0) and d.path.rsplit(".", 1)[-1] not in _SKIP_LEAVES]
    if not rows:
        return "no differences\n"
    width = max(len(d.path) for d in rows)
    head = f"{'metric':<{width}}  {name_a[:14]:>14}  {name_b[:14]:>14}  {'change':>11}  {'%':>8}"
    lines = [head, "-" * len(head)]
    for d in rows:
        mark = "" if d.better is None else (" +" if d.better else " -")
        pct = "" if d.percent is None else f"{d.percent:+.1f}%"
        lines.append(f"{d.path:<{width}}  {_num(d.a):>14}  {_num(d.b):>14}  {d.change:>+11.3f}  {pct:>8}{mark}")
    lines.append("(+ better, - worse)")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.3f}"
