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

from benchmarks.harness.scenarios import (
    BASELINE,
    CACHE_MISS,
    CACHE_MIXED,
    FEATURES,
    FORWARDER,
    OVERHEAD,
    OVERLOAD,
    STREAM,
    THROUGHPUT,
)
from benchmarks.harness.variants import ALL_ON, COMPANY, DELTAS, LADDER, VARIANTS, ladder_label
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
    return (
        direct.get(f"{OVERHEAD}@{rate}rps")
        or direct.get(f"{FEATURES}@{rate}rps")
        or direct.get(f"{CACHE_MISS}@{rate}rps")
    )


def add_overheads(doc: dict[str, Any]) -> None:
    """Each open-loop level gets `overhead_ms`: its latency minus the direct call's at the same rate."""
    direct = _levels(doc, "direct")
    for name, target in doc["targets"].items():
        if name == "direct":
            continue
        for level in target.get("levels", []):
            if level.get("mode") != "open" or "skipped" in level or level["scenario"] == OVERLOAD:
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


MIN_SUCCESS = 0.999  # a feature level below this did not pass its requests through


def _feature_level(doc: dict[str, Any], name: str, rate: int) -> dict[str, Any] | None:
    """A variant's level at the feature rate; for the everything-on gateway, its overhead level."""
    levels = _levels(doc, name)
    return levels.get(f"{FEATURES}@{rate}rps") or levels.get(f"{OVERHEAD}@{rate}rps")


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def feature_costs(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Each variant's overhead at the feature rate and what each feature adds, or None without variants.

    A feature's cost is the difference of two variants' latency percentiles at the same rate (the
    same as the difference of their overheads, without the direct call's noise in it).
    """
    if not any(name in VARIANTS or name == COMPANY for name in doc["targets"]):
        return None
    rate = int(doc.get("settings", {}).get("feature_rate", 500))
    rows, lat, ok, cpu = [], {}, {}, {}
    for name in LADDER:
        if name not in doc["targets"]:
            continue
        lv = _feature_level(doc, name, rate)
        lat[name] = (lv or {}).get("latency_ms") or {}
        ok[name] = (lv or {}).get("success_rate", 0.0) >= MIN_SUCCESS
        cpu[name] = ((lv or {}).get("resources") or {}).get("cpu_s_per_1k")
        over = (lv or {}).get("overhead_ms") or {}
        res = (lv or {}).get("resources") or {}
        rows.append(
            {
                "target": name,
                "label": ladder_label(name),
                "status": doc["targets"][name].get("status", "ok"),
                "overhead_p50": over.get("p50"),
                "overhead_p99": over.get("p99"),
                "success_rate": None if lv is None else lv.get("success_rate"),
                "cpu_ms_per_request": res.get("cpu_s_per_1k"),  # CPU s per 1,000 = CPU ms per request
                "requests": res.get("requests_total"),
                "counts": (lv or {}).get("feature_counts") or {},
            }
        )
    deltas = []
    for what, slower, faster, bound in DELTAS:
        a, b = lat.get(slower) or {}, lat.get(faster) or {}
        p50 = _diff(a.get("p50"), b.get("p50"))
        deltas.append(
            {
                "feature": what,
                "slower": slower,
                "faster": faster,
                "p50": p50,
                "p99": _diff(a.get("p99"), b.get("p99")),
                # CPU per request: steadier than a percentile difference at a rate far below capacity
                "cpu_ms": _diff(cpu.get(slower), cpu.get(faster)),
                "bound_ms": bound,
                # A variant that refused or lost requests was not passing them through: not met.
                "ok": None
                if p50 is None or bound is None
                else p50 < bound and ok.get(slower, False) and ok.get(faster, False),
            }
        )
    return {"rate": rate, "variants": rows, "deltas": deltas}


def _check(name: str, measured: Any, target: str, ok: bool | None) -> dict[str, Any]:
    return {"check": name, "measured": measured, "target": target, "ok": ok}


HEADLINE_CONNECTIONS = 300
HEADLINE_RATES = (100, 500)
SHED_P99_MS = 500.0  # past capacity, answers (served or shed) within this: shedding, not queueing


def main_targets(doc: dict[str, Any]) -> list[str]:
    """Every target but the feature-only variants (they run one level and have their own section)."""
    return [name for name in doc["targets"] if name not in VARIANTS]


def _cpu(level: dict[str, Any] | None) -> float | None:
    return ((level or {}).get("resources") or {}).get("cpu_s_per_1k")  # CPU s per 1,000 = CPU ms per request


def headline(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target: RPS and CPU ms per request at 300 connections, their ratios to the forwarder, and
    the overhead at 100 and 500 RPS."""
    key = f"{THROUGHPUT}@{HEADLINE_CONNECTIONS}conn"
    fwd = _levels(doc, FORWARDER).get(key)
    rows = []
    for name in main_targets(doc):
        t = doc["targets"][name]
        levels = _levels(doc, name)
        lv = levels.get(key)
        row: dict[str, Any] = {
            "target": name,
            "label": t.get("label", name),
            "status": t.get("status", "ok"),
            "rps": None if lv is None else lv["rps"],
            "errors": None if lv is None else lv["errors"],
            "cpu_ms_per_request": None if name == BASELINE else _cpu(lv),
            "cpu_vs_forwarder": None if name == BASELINE else stats.ratio(_cpu(lv), _cpu(fwd)),
            "rps_vs_forwarder": stats.ratio(None if lv is None else lv["rps"], None if fwd is None else fwd["rps"]),
            "wrk": t.get("wrk"),
        }
        for rate in HEADLINE_RATES:
            over = (levels.get(f"{OVERHEAD}@{rate}rps") or {}).get("overhead_ms") or {}
            row[f"overhead_{rate}"] = {"p50": over.get("p50"), "p99": over.get("p99")} if over else None
        rows.append(row)
    return rows


DISTURBED_CORES = 0.25  # CPU of processes outside the benchmark above this during a level: say so


def disturbed(doc: dict[str, Any]) -> dict[str, float]:
    """Targets whose headline levels ran while processes outside the benchmark used more than
    DISTURBED_CORES: {target: the most such CPU seen, in cores}. Their latencies and RPS are not this
    machine's; CPU per request, counted on the target's own processes, is less affected."""
    keys = {f"{THROUGHPUT}@{HEADLINE_CONNECTIONS}conn", *(f"{OVERHEAD}@{r}rps" for r in HEADLINE_RATES)}
    out = {}
    for name in main_targets(doc):
        other = [
            float((lv.get("resources") or {}).get("other_cpu", 0.0))
            for key, lv in _levels(doc, name).items()
            if key in keys
        ]
        if other and max(other) > DISTURBED_CORES:
            out[name] = round(max(other), 2)
    return out


def ratios(doc: dict[str, Any]) -> dict[str, Any]:
    """CPU per request and RPS at 300 connections of every target as a ratio to every other one (row /
    column), from this run only: nginx, the forwarder and each peer are the columns that matter."""
    key = f"{THROUGHPUT}@{HEADLINE_CONNECTIONS}conn"
    names = [n for n in main_targets(doc) if n != BASELINE and _levels(doc, n).get(key) is not None]
    cpu = {n: _cpu(_levels(doc, n)[key]) for n in names}
    rps = {n: _levels(doc, n)[key]["rps"] for n in names}
    return {
        "targets": names,
        "cpu": {a: {b: stats.ratio(cpu[a], cpu[b]) for b in names if b != a} for a in names},
        "rps": {a: {b: stats.ratio(rps[a], rps[b]) for b in names if b != a} for a in names},
    }


def overload_figures(level: dict[str, Any]) -> dict[str, Any]:
    """The past-capacity level: served, shed (429/503), with Retry-After, unanswered, answers' p99."""
    shed = level.get("shed") or {}
    kinds = level.get("error_kinds") or {}
    unanswered = sum(int(kinds.get(k, 0)) for k in ("connect", "read", "timeout"))
    answered = level.get("answered_latency_ms") or level.get("latency_ms") or {}
    other = int(level["errors"]) - int(shed.get("count", 0)) - unanswered  # other statuses (500s...)
    return {
        "rate": level.get("rate"),
        "capacity_rps": level.get("capacity_rps"),
        "requests": level["requests"],
        "served": level["ok"],
        "shed": int(shed.get("count", 0)),
        "shed_with_retry_after": int(shed.get("with_retry_after", 0)),
        "shed_p99_ms": (shed.get("latency_ms") or {}).get("p99"),
        "unanswered": unanswered,
        "other_errors": other,
        "answered_p99_ms": answered.get("p99"),
        "served_p50_ms": (level.get("latency_ms") or {}).get("p50"),
    }


def sheds_fast(fig: dict[str, Any]) -> bool | None:
    """Met when nothing went unanswered or failed otherwise, every shed answer said when to come back,
    and answers (served or shed) came within SHED_P99_MS at p99."""
    if fig["answered_p99_ms"] is None:
        return False if fig["requests"] else None
    return (
        fig["unanswered"] == 0
        and fig["other_errors"] == 0
        and fig["shed_with_retry_after"] == fig["shed"]
        and fig["answered_p99_ms"] <= SHED_P99_MS
    )


def _company_checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The hot-path issue's targets: the company configuration and embedded defaults against the
    forwarder and Portkey measured in the same run."""
    out = []
    key = f"{THROUGHPUT}@{HEADLINE_CONNECTIONS}conn"
    fwd = _cpu(_levels(doc, FORWARDER).get(key))
    for name, bound in ((COMPANY, 0.8), (ALL_ON, 0.55)):
        r = stats.ratio(_cpu(_levels(doc, name).get(key)), fwd)
        out.append(
            _check(
                f"{name} CPU ms/request vs forwarder at {HEADLINE_CONNECTIONS} connections",
                None if r is None else f"{r}x",
                f"<= {bound}x",
                None if r is None else r <= bound,
            )
        )
    company = _levels(doc, COMPANY)
    for rate in HEADLINE_RATES:
        over = (company.get(f"{OVERHEAD}@{rate}rps") or {}).get("overhead_ms")
        for pct, bound in (("p50", 1.0), ("p99", 5.0)):
            out.append(
                _check(
                    f"{COMPANY} overhead {pct} at {rate} RPS",
                    over and f"{over[pct]} ms",
                    f"<= {bound:g} ms",
                    None if not over else over[pct] <= bound,
                )
            )
    mine, portkey = company.get(key), _levels(doc, "portkey").get(key)
    r = stats.ratio(None if mine is None else mine["rps"], None if portkey is None else portkey["rps"])
    out.append(
        _check(
            f"{COMPANY} RPS at {HEADLINE_CONNECTIONS} connections vs portkey",
            None if r is None else f"{r}x",
            ">= 8x",
            None if r is None else r >= 8,
        )
    )
    lv = company.get(f"{THROUGHPUT}@1000conn")
    out.append(
        _check(
            f"{COMPANY} errors at 1000 connections",
            None if lv is None else lv["errors"],
            "0",
            None if lv is None else lv["errors"] == 0,
        )
    )
    over_lv = next((lv for lv in company.values() if lv["scenario"] == OVERLOAD), None)
    if over_lv is None:
        out.append(_check(f"{COMPANY} past capacity sheds fast", None, "429/503 with retry-after", None))
    else:
        fig = overload_figures(over_lv)
        out.append(
            _check(
                f"{COMPANY} past capacity ({fig['rate']:,} RPS) sheds fast",
                f"{fig['served']:,} served, {fig['shed']:,} shed ({fig['shed_with_retry_after']:,} with "
                f"retry-after), {fig['unanswered']:,} unanswered, p99 {fig['answered_p99_ms']} ms",
                f"429/503 with retry-after, none unanswered, p99 <= {SHED_P99_MS:g} ms",
                sheds_fast(fig),
            )
        )
    return out


def checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues' targets against this run's figures; ok None when a figure is missing."""
    gw, out = _levels(doc, "gateway"), _company_checks(doc)

    def rps(target: str, key: str) -> float | None:
        lv = _levels(doc, target).get(key)
        return None if lv is None else lv["rps"]

    g300 = rps("gateway", f"{THROUGHPUT}@300conn")
    for peer, factor in (("nginx", 0.5), ("litellm", 30.0), ("portkey", 5.0)):
        other = rps(peer, f"{THROUGHPUT}@300conn")
        r = stats.ratio(g300, other)
        out.append(
            _check(
                f"gateway RPS at 300 connections vs {peer}",
                None if r is None else f"{r}x",
                f">= {factor}x",
                None if r is None else r >= factor,
            )
        )
    lv = gw.get(f"{THROUGHPUT}@1000conn")
    out.append(
        _check(
            "gateway errors at 1000 connections",
            None if lv is None else lv["errors"],
            "0",
            None if lv is None else lv["errors"] == 0,
        )
    )
    lv = gw.get(f"{OVERHEAD}@500rps")
    over = (lv or {}).get("overhead_ms")
    out.append(
        _check(
            "gateway overhead p50 at 500 RPS",
            over and f"{over['p50']} ms",
            "<= 1 ms",
            None if not over else over["p50"] <= 1.0,
        )
    )
    out.append(
        _check(
            "gateway overhead p99 at 500 RPS",
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
    if (costs := feature_costs(doc)) is not None:
        for d in costs["deltas"]:
            if d["bound_ms"] is None:
                continue  # shown in the feature-cost table, no target set for it
            near_zero = " (≈ 0)" if d["slower"] == "gateway-compliance" else ""
            out.append(
                _check(
                    f"{d['feature']} p50",
                    None if d["p50"] is None else f"{d['p50']:+} ms",
                    f"< {d['bound_ms']:g} ms{near_zero}",
                    d["ok"],
                )
            )
    t = doc["targets"].get("gateway") or {}
    per_worker = t.get("peak_rss_process_mb")
    out.append(
        _check(
            "gateway peak RSS per worker",
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
