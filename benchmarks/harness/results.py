"""Results of a run: overhead against the direct call, the issue's targets checked, JSON and Markdown.

Files: <dir>/<date>-<host>.json (every figure), <dir>/<date>-<host>.md and <dir>/latest.md (the
tables), next to the charts. The targets in `checks` are the ones the benchmark issue sets; a
quick run checks them too, but CI only asserts that results were written, never timings.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.harness.scenarios import CACHE_MISS, CACHE_MIXED, OVERHEAD, STREAM, THROUGHPUT
from gateway.bench import report, stats


def _summary(data: dict[str, Any] | None) -> stats.Summary | None:
    return None if data is None else msgspec.convert(data, stats.Summary)


def _levels(doc: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    t = doc["targets"].get(target) or {}
    return {lv["key"]: lv for lv in t.get("levels", []) if "skipped" not in lv}


def _baseline(direct: dict[str, dict[str, Any]], level: dict[str, Any]) -> dict[str, Any] | None:
    rate = level["value"]
    if level["scenario"] == STREAM:
        return direct.get(f"{STREAM}@{rate}rps")
    return direct.get(f"{OVERHEAD}@{rate}rps") or direct.get(f"{CACHE_MISS}@{rate}rps")


def add_overheads(doc: dict[str, Any]) -> None:
    """Each open-loop level gets `overhead_ms`: its latency minus the direct call's at the same rate."""
    direct = _levels(doc, "direct")
    for name, target in doc["targets"].items():
        if name == "direct":
            continue
        for level in target.get("levels", []):
            if level.get("mode") != "open" or "skipped" in level:
                continue
            base = _baseline(direct, level)
            if base is None:
                continue
            over = stats.overhead(_summary(level.get("latency_ms")), _summary(base.get("latency_ms")))
            level["overhead_ms"] = None if over is None else msgspec.structs.asdict(over)
            level["baseline_latency_ms"] = base.get("latency_ms")
            if level["scenario"] == STREAM:
                ttfb = stats.overhead(_summary(level.get("ttfb_ms")), _summary(base.get("ttfb_ms")))
                level["ttfb_overhead_ms"] = None if ttfb is None else msgspec.structs.asdict(ttfb)


def _check(name: str, measured: Any, target: str, ok: bool | None) -> dict[str, Any]:
    return {"check": name, "measured": measured, "target": target, "ok": ok}


def checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures; ok None when a figure is missing."""
    gw, out = _levels(doc, "gateway"), []

    def rps(target: str, key: str) -> float | None:
        lv = _levels(doc, target).get(key)
        return None if lv is None else lv["rps"]

    g300 = rps("gateway", f"{THROUGHPUT}@300conn")
    for peer, factor in (("nginx", 0.5), ("litellm", 30.0), ("portkey", 5.0)):
        other = rps(peer, f"{THROUGHPUT}@300conn")
        r = stats.ratio(g300, other)
        out.append(
            _check(
                f"RPS at 300 connections vs {peer}",
                None if r is None else f"{r}x",
                f">= {factor}x",
                None if r is None else r >= factor,
            )
        )
    lv = gw.get(f"{THROUGHPUT}@1000conn")
    out.append(
        _check(
            "errors at 1000 connections",
            None if lv is None else lv["errors"],
            "0",
            None if lv is None else lv["errors"] == 0,
        )
    )
    lv = gw.get(f"{OVERHEAD}@500rps")
    over = (lv or {}).get("overhead_ms")
    out.append(
        _check(
            "overhead p50 at 500 RPS",
            over and f"{over['p50']} ms",
            "<= 1 ms",
            None if not over else over["p50"] <= 1.0,
        )
    )
    out.append(
        _check(
            "overhead p99 at 500 RPS",
            over and f"{over['p99']} ms",
            "<= 10 ms",
            None if not over else over["p99"] <= 10.0,
        )
    )
    for _key, lv in gw.items():
        if lv["scenario"] == CACHE_MISS:
            over = lv.get("overhead_ms")
            if lv["value"] <= 75 and over:
                out.append(
                    _check(
                        f"miss p50 overhead at {lv['value']} RPS",
                        f"{over['p50']} ms",
                        "< 20 ms",
                        over["p50"] < 20.0,
                    )
                )
            out.append(_check(f"miss errors at {lv['value']} RPS", lv["errors"], "0", lv["errors"] == 0))
        if lv["scenario"] == CACHE_MIXED:
            base = (lv.get("baseline_latency_ms") or {}).get("p50")
            mine = (lv.get("latency_ms") or {}).get("p50")
            r = stats.ratio(mine, base)
            out.append(
                _check(
                    f"mixed p50 vs direct at {lv['value']} RPS",
                    r and f"{r}x",
                    "<= 0.333x",
                    None if r is None else r <= 1 / 3,
                )
            )
            hit = (lv.get("hit_latency_ms") or {}).get("p50")
            out.append(
                _check(
                    f"cache hit p50 at {lv['value']} RPS",
                    hit and f"{hit} ms",
                    "< 1 ms",
                    None if hit is None else hit < 1.0,
                )
            )
    t = doc["targets"].get("gateway") or {}
    per_worker = t.get("peak_rss_process_mb")
    out.append(
        _check(
            "peak RSS per worker",
            per_worker and f"{per_worker} MB",
            "< 200 MB",
            None if per_worker is None else per_worker < 200,
        )
    )
    return out


def file_stem(doc: dict[str, Any]) -> str:
    day = datetime.fromisoformat(doc["started"]).strftime("%Y-%m-%d")
    return f"{day}-{doc['machine']['host']}"


def write(doc: dict[str, Any], out_dir: Path, markdown: str) -> dict[str, Path]:
    """Write the JSON and the Markdown (dated, and latest.md)."""
    stem = file_stem(doc)
    paths = {
        "json": report.write_json(out_dir / f"{stem}.json", doc),
        "md": out_dir / f"{stem}.md",
        "latest": out_dir / "latest.md",
    }
    for key in ("md", "latest"):
        paths[key].write_text(markdown)
    return paths
