"""The Markdown report of a run: one table per scenario, the rig's own load, the issue's targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import profile, results
from benchmarks.harness.scenarios import CACHE_MISS, CACHE_MIXED, OVERHEAD, STREAM, THROUGHPUT
from benchmarks.harness.variants import VARIANTS


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _signed(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows), ""]


def _by_key(target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lv["key"]: lv for lv in target.get("levels", [])}


def _main_targets(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every target but the feature-cost variants, which have a section of their own."""
    return [(name, t) for name, t in doc["targets"].items() if name not in VARIANTS]


def _status_row(name: str, target: dict[str, Any], width: int) -> list[str] | None:
    if target.get("status", "ok") == "ok":
        return None
    return [f"**{name}**", target["status"], *[""] * (width - 2)]


def _per_target_table(doc: dict[str, Any], head: list[str], keys: list[str],
                      cell: Callable[[str, dict[str, Any]], str]) -> list[str]:
    """A row per main target, a cell per level key ("–" when absent, the reason when skipped)."""
    rows = []
    for name, t in _main_targets(doc):
        if (status := _status_row(name, t, len(head))) is not None:
            rows.append(status)
            continue
        levels, cells = _by_key(t), [f"**{name}**"]
        for key in keys:
            lv = levels.get(key)
            cells.append("–" if lv is None else lv["skipped"] if "skipped" in lv else cell(name, lv))
        rows.append(cells)
    return _table(head, rows)


def _overhead_cell(name: str, lv: dict[str, Any]) -> str:
    if name == "direct":
        lat = lv.get("latency_ms") or {}
        return f"{_f(lat.get('p50'))} / {_f(lat.get('p99'))} / {_f(lat.get('max'))} ms ({lv['success_rate']:.1%})"
    o = lv.get("overhead_ms") or {}
    return (f"{_signed(o.get('p50'), 2)} / {_signed(o.get('p99'))} / {_signed(o.get('max'))} "
            f"({lv['success_rate']:.1%})")


def _throughput_cell(name: str, lv: dict[str, Any]) -> str:
    lat = lv.get("latency_ms") or {}
    cell = f"{lv['rps']:,.0f} · {_f(lat.get('p50'))} / {_f(lat.get('p99'))} · {lv['errors']:,}"
    if lv.get("unfinished"):
        cell += f" ({lv['unfinished']:,} conn. never answered)"
    return cell


def _overhead_table(doc: dict[str, Any], rates: list[int]) -> list[str]:
    head = ["target", *[f"{r} RPS: p50 / p99 / max (success)" for r in rates]]
    return _per_target_table(doc, head, [f"{OVERHEAD}@{r}rps" for r in rates], _overhead_cell)


def _throughput_table(doc: dict[str, Any], conns: list[int]) -> list[str]:
    head = ["target", *[f"{c} conn: RPS · p50 / p99 ms · errors" for c in conns]]
    return _per_target_table(doc, head, [f"{THROUGHPUT}@{c}conn" for c in conns], _throughput_cell)


def _cache_table(doc: dict[str, Any]) -> list[str]:
    head = [
        "mode @ rate",
        "p50 / p95 / p99 ms",
        "direct p50 / p95 / p99 ms",
        "hit rate",
        "hit p50 ms",
        "success",
        "embeddings/s",
        "phase-4 lookups/s",
        "phase-4 share",
    ]
    rows = []
    for name, t in doc["targets"].items():
        for lv in t.get("levels", []):
            if lv["scenario"] not in (CACHE_MISS, CACHE_MIXED) or name == "direct":
                continue
            label = f"{name} {lv['scenario']} @ {lv['value']} RPS"
            if "skipped" in lv:
                rows.append([label, lv["skipped"], "", "", "", "", "", "", ""])
                continue
            lat, base = lv.get("latency_ms") or {}, lv.get("baseline_latency_ms") or {}
            hit = (lv.get("hit_latency_ms") or {}).get("p50")
            share = lv.get("phase4_share")
            rows.append(
                [
                    label,
                    f"{_f(lat.get('p50'))} / {_f(lat.get('p95'))} / {_f(lat.get('p99'))}",
                    f"{_f(base.get('p50'))} / {_f(base.get('p95'))} / {_f(base.get('p99'))}",
                    f"{lv['hit_rate']:.1%}",
                    _f(hit, 2),
                    f"{lv['success_rate']:.1%}",
                    _f(lv.get("embeddings_per_s")),
                    _f(lv.get("phase4_lookups_per_s")),
                    "–" if share is None else f"{share:.1%}",
                ]
            )
    return _table(head, rows) if rows else ["(no cache levels in this run)", ""]


def _stream_table(doc: dict[str, Any]) -> list[str]:
    head = ["target", "TTFB p50 / p99 ms", "total p50 / p99 ms", "TTFB overhead p50 / p99", "success"]
    rows = []
    for name, t in doc["targets"].items():
        for lv in t.get("levels", []):
            if lv["scenario"] != STREAM:
                continue
            if "skipped" in lv:
                rows.append([f"**{name}**", lv["skipped"], "", "", ""])
                continue
            ttfb, lat, o = (
                lv.get("ttfb_ms") or {},
                lv.get("latency_ms") or {},
                lv.get("ttfb_overhead_ms") or {},
            )
            rows.append(
                [
                    f"**{name}** @ {lv['value']} RPS",
                    f"{_f(ttfb.get('p50'))} / {_f(ttfb.get('p99'))}",
                    f"{_f(lat.get('p50'))} / {_f(lat.get('p99'))}",
                    f"{_signed(o.get('p50'), 2)} / {_signed(o.get('p99'))}",
                    f"{lv['success_rate']:.1%}",
                ]
            )
    return _table(head, rows)


def _resources_table(doc: dict[str, Any]) -> list[str]:
    head = [
        "target",
        "placement",
        "peak RSS (all processes) MB",
        "largest process MB",
        "CPU s / 1k requests",
        "CPU at 300 conn (cores)",
        "version",
    ]
    rows = []
    for name, t in _main_targets(doc):
        if name == "direct" or t.get("status") != "ok":
            continue
        lv = _by_key(t).get(f"{THROUGHPUT}@300conn") or {}
        util = (lv.get("resources") or {}).get("cpu_util")
        place = "pinned, 1 core" if t.get("pinned") else f"unpinned, {t.get('workers')} workers"
        rows.append(
            [
                f"**{name}**",
                place,
                _f(t.get("peak_rss_mb")),
                _f(t.get("peak_rss_process_mb")),
                _f(t.get("cpu_s_per_1k"), 3),
                _f(util, 2),
                str(doc["versions"].get(name) or "–"),
            ]
        )
    return _table(head, rows)


def _rig_table(doc: dict[str, Any]) -> list[str]:
    rig_core = str(doc["placement"].get("driver_and_mock_cores"))
    target_core = str(doc["placement"].get("target_cores"))
    head = [
        "target",
        "driver CPU max",
        "mock CPU max",
        f"core {rig_core} busy max (driver + mock)",
        f"core {target_core} busy max (target)",
        "other processes' CPU max",
        "max schedule lag ms",
    ]
    rows = []
    for name, t in doc["targets"].items():
        levels = [lv for lv in t.get("levels", []) if "skipped" not in lv]
        if not levels:
            continue
        res = [lv.get("resources") or {} for lv in levels]
        drv = max(lv["driver"]["cpu_util"] or 0 for lv in levels)
        mock = max(r.get("mock_cpu_util", 0) for r in res)
        rig = max(((r.get("core_util") or {}).get(rig_core) for r in res), default=None, key=lambda v: v or 0)
        tgt = max(((r.get("core_util") or {}).get(target_core) for r in res), default=None, key=lambda v: v or 0)
        lag = max(lv["driver"]["max_schedule_lag_ms"] for lv in levels)
        other = max((r.get("other_cpu", 0.0) for r in res), default=0.0)
        rows.append([name, _f(drv, 2), _f(mock, 2), _f(rig, 2), _f(tgt, 2), _f(other, 2), _f(lag, 2)])
    return _table(head, rows)


def _counts(counts: dict[str, int], governed: bool) -> str:
    if not counts:
        return "no policy flags, blocks or failures" if governed else ""
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))


def _features(doc: dict[str, Any]) -> list[str]:
    costs = results.feature_costs(doc)
    if costs is None:
        return []
    rate = costs["rate"]
    lines = [
        f"## Feature costs (open loop at {rate} RPS)",
        "",
        f"Gateway variants, each pinned to core 0 with 1 worker and measured one after another at {rate} RPS "
        "with unique, non-cacheable bodies (the overhead method); the everything-on row is the gateway's "
        "own level at that rate. What a feature adds is the difference of two variants' latency "
        "percentiles. Every limit is far above the load and every policy passes: these are the costs of "
        f"checking, not of refusing. These are differences of separate {doc['settings']['level_s']:g}-second samples: "
        "between two runs on "
        "one machine they moved by up to 0.2 ms at p50 and 2 ms at p99, so one run tells whether a feature is "
        "near its bound, not its exact cost; CPU per request says where the work goes.",
        "",
    ]
    head = ["variant", "what is on", "overhead p50 / p99 ms", "success", "CPU ms / request", "checks (in the level)"]
    rows = []
    for v in costs["variants"]:
        if v["status"] != "ok":
            rows.append([f"**{v['target']}**", v["label"], v["status"], "", "", ""])
            continue
        ok = v["success_rate"]
        governed = v["target"] in VARIANTS and VARIANTS[v["target"]].governed
        rows.append(
            [
                f"**{v['target']}**",
                v["label"],
                f"{_signed(v['overhead_p50'], 2)} / {_signed(v['overhead_p99'], 2)}",
                "–" if ok is None else f"{ok:.1%}",
                _f(v["cpu_ms_per_request"], 3),
                _counts(v["counts"], governed),
            ]
        )
    lines += _table(head, rows)
    head = ["feature", "measured as", "adds p50 ms", "adds p99 ms", "adds CPU ms / request", "wanted (p50)", "met"]
    mark = {True: "yes", False: "**no**", None: "n/a"}
    rows = [
        [
            d["feature"],
            f"{d['slower']} − {d['faster']}",
            _signed(d["p50"], 3),
            _signed(d["p99"], 2),
            _signed(d.get("cpu_ms"), 3),
            f"< {d['bound_ms']:g} ms",
            mark[d["ok"]],
        ]
        for d in costs["deltas"]
    ]
    return lines + _table(head, rows)


def _checks_table(doc: dict[str, Any]) -> list[str]:
    mark = {True: "yes", False: "**no**", None: "n/a"}
    rows = [
        [c["check"], str(c["measured"] if c["measured"] is not None else "–"), c["target"], mark[c["ok"]]]
        for c in doc.get("checks", [])
    ]
    return _table(["target from the issue", "measured", "wanted", "met"], rows)


def _profiles(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, t in doc["targets"].items():
        for lv in t.get("levels", []):
            prof = lv.get("profile")
            if not prof:
                continue
            lines += [f"### {name} at {lv['key']} (py-spy, {prof.get('samples', 0)} samples)", ""]
            if "error" in prof:
                lines += [f"py-spy failed: {prof['error']}", ""]
                continue
            rows = [[frame, f"{share:.1%}"] for frame, share in prof.get("self", [])[:10]]
            lines += _table(["where the samples landed (self)", "share"], rows)
            ours = [(f, share) for f, share in prof.get("inclusive_gateway", []) if not profile.launcher(f)]
            rows = [[frame, f"{share:.1%}"] for frame, share in ours[:10]]
            if rows:
                lines += _table(["gateway function (inclusive)", "share"], rows)
    return lines


def render(doc: dict[str, Any], charts: dict[str, str]) -> str:
    m, s, p = doc["machine"], doc["settings"], doc["placement"]
    rates = sorted(
        {lv["value"] for t in doc["targets"].values() for lv in t.get("levels", []) if lv["scenario"] == OVERHEAD}
    )
    conns = sorted(
        {lv["value"] for t in doc["targets"].values() for lv in t.get("levels", []) if lv["scenario"] == THROUGHPUT}
    )
    lines = [
        f"# Benchmark: {doc['started']} on {m['host']} ({doc['plan']} run)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}. "
        f"Mock upstream with a fixed {s['mock_latency_ms']} ms latency: anything above it is overhead. "
        f"Targets on core(s) {p['target_cores']}; "
        f"load driver and mock on core(s) {p['driver_and_mock_cores']}; "
        f"figures are per gateway core unless marked unpinned. Levels of {s['level_s']} s after "
        f"{s['warmup_s']} s warm-up; every request body is unique unless a scenario repeats it on purpose.",
        "",
    ]
    if doc.get("standin"):
        lines += [
            "**Stand-in run**: the `gateway` command was not installed; these are the stand-in "
            "mock and bare forwarder, not the gateway.",
            "",
        ]
    lines += [
        "## Overhead at a fixed rate (ms added over the direct call at the same rate; open loop)",
        "",
        "The direct row shows its absolute latency.",
        "",
        *_overhead_table(doc, rates),
    ]
    lines += ["## Throughput at constant connections (closed loop)", "", *_throughput_table(doc, conns)]
    lines += [
        "## Cache modes (temperature 0): mixed = 50% one repeated prompt, miss = 100% unique",
        "",
        *_cache_table(doc),
    ]
    lines += [f"## Streaming ({s['stream_chunks']} chunks)", "", *_stream_table(doc)]
    lines += _features(doc)
    lines += ["## Resources", "", *_resources_table(doc)]
    lines += [
        "## The rig (load driver and mock must not be the bottleneck: 1.0 = one full core)",
        "",
        *_rig_table(doc),
    ]
    lines += ["## Targets", "", *_checks_table(doc)]
    if profiles := _profiles(doc):
        lines += ["## Profiles", "", *profiles]
    if charts:
        lines += ["## Charts", ""] + [f"![{name}]({path})" for name, path in charts.items()] + [""]
    return "\n".join(lines)
