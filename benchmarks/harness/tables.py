"""The Markdown report of a run: one table per scenario, the rig's own load, the issue's targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import profile, results
from benchmarks.harness.scenarios import CACHE_MISS, CACHE_MIXED, OVERHEAD, OVERLOAD, STREAM, THROUGHPUT
from benchmarks.harness.variants import CONFIGURED, VARIANTS
from gateway.bench import stats


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


def _cpu_ms(lv: dict[str, Any]) -> float | None:
    return (lv.get("resources") or {}).get("cpu_s_per_1k")  # CPU s per 1,000 requests = CPU ms per request


def _throughput_cell(name: str, lv: dict[str, Any]) -> str:
    lat = lv.get("latency_ms") or {}
    cpu = "" if name == "direct" else f" · {_f(_cpu_ms(lv), 3)}"
    cell = f"{lv['rps']:,.0f}{cpu} · {_f(lat.get('p50'))} / {_f(lat.get('p99'))} · {lv['errors']:,}"
    if lv.get("unfinished"):
        cell += f" ({lv['unfinished']:,} conn. never answered)"
    return cell


def _overhead_table(doc: dict[str, Any], rates: list[int]) -> list[str]:
    head = ["target", *[f"{r} RPS: p50 / p99 / max (success)" for r in rates]]
    return _per_target_table(doc, head, [f"{OVERHEAD}@{r}rps" for r in rates], _overhead_cell)


def _throughput_table(doc: dict[str, Any], conns: list[int]) -> list[str]:
    head = ["target", *[f"{c} conn: RPS · CPU ms/req · p50 / p99 ms · errors" for c in conns]]
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
        "verifier pairs / lookup",
        "ML ms / lookup",
    ]
    rows = []
    for name, t in doc["targets"].items():
        for lv in t.get("levels", []):
            if lv["scenario"] not in (CACHE_MISS, CACHE_MIXED) or name == "direct":
                continue
            label = f"{name} {lv['scenario']} @ {lv['value']} RPS"
            if "skipped" in lv:
                rows.append([label, lv["skipped"], "", "", "", "", "", "", "", "", ""])
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
                    _f(lv.get("verifier_pairs_per_lookup"), 2),
                    _f(lv.get("ml_ms_per_lookup"), 2),
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
        "with unique, non-cacheable bodies (the overhead method); the rows of `gateway` (embedded defaults) "
        "and `gateway-company` (the company configuration) are their own overhead levels at that rate."
        " What a feature adds is the difference of two variants' latency "
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
        governed = v["target"] in CONFIGURED and CONFIGURED[v["target"]].governed
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
            "none set" if d["bound_ms"] is None else f"< {d['bound_ms']:g} ms",
            mark[d["ok"]],
        ]
        for d in costs["deltas"]
    ]
    return lines + _table(head, rows)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}x"


def _over(o: dict[str, Any] | None) -> str:
    return "–" if not o else f"{_signed(o.get('p50'), 2)} / {_signed(o.get('p99'), 1)}"


def _headline(doc: dict[str, Any]) -> list[str]:
    rows = []
    for h in results.headline(doc):
        if h["status"] != "ok":
            rows.append([f"**{h['target']}**", h["status"], "", "", "", "", "", ""])
            continue
        w = h.get("wrk") or {}
        rps = "–" if h["rps"] is None else f"{h['rps']:,.0f}"
        if h["errors"]:
            rps += f" ({h['errors']:,} errors)"
        rows.append(
            [
                f"**{h['target']}**",
                rps,
                "–" if "rps" not in w else f"{w['rps']:,.0f}",
                _f(h["cpu_ms_per_request"], 3),
                _ratio(h["cpu_vs_forwarder"]),
                _ratio(h["rps_vs_forwarder"]),
                _over(h["overhead_100"]),
                _over(h["overhead_500"]),
            ]
        )
    head = [
        "target",
        f"RPS at {results.HEADLINE_CONNECTIONS} conn",
        "wrk RPS (same)",
        f"CPU ms / request at {results.HEADLINE_CONNECTIONS} conn",
        "CPU ratio to forwarder",
        "RPS ratio to forwarder",
        "overhead p50 / p99 ms at 100 RPS",
        "at 500 RPS",
    ]
    labels = [f"- **{name}**: {doc['targets'][name].get('label', name)}" for name in results.main_targets(doc)]
    noisy = results.disturbed(doc)
    warning = []
    if noisy:
        worst = ", ".join(f"{name} {cores:.2f}" for name, cores in noisy.items())
        warning = [
            f"**Disturbed run**: processes outside the benchmark used more than {results.DISTURBED_CORES} of a core "
            f"during these targets' headline levels (at most, in cores: {worst}; see the rig table). Their RPS and "
            "latencies are not this machine's; CPU per request, counted on each target's own processes, is less "
            "affected. Run again on a quiet machine before quoting them.",
            "",
        ]
    return [
        "## Headline",
        "",
        f"One run, one machine: each target pinned to core {doc['placement'].get('target_cores')} with one worker "
        "(unless marked unpinned), the load driver and the mock on the other core. Absolute figures are this "
        "run's; compare the ratios, which come from the same run. **gateway-company** is what \"everything on\" "
        "means: auth with a configured key, limits for every key, input policies, and every default "
        "(cache stage, compression, ledger, audit log, metrics, embedded store). **forwarder** is the "
        "calibration point: the cheapest Python proxy (Granian + msgspec + aiohttp, no features). "
        "CPU per request is the target's whole process tree (utime + stime over the level) divided by the "
        "requests it answered; a ratio under 1 to the forwarder means cheaper than the featureless forwarder.",
        "",
        *warning,
        *_table(head, rows),
        *labels,
        "",
    ]


def _matrix(doc: dict[str, Any], kind: str, title: str) -> list[str]:
    r = results.ratios(doc)
    names = r["targets"]
    if len(names) < 2:
        return []
    rows = [[f"**{a}**", *["·" if a == b else _ratio(r[kind][a].get(b)) for b in names]] for a in names]
    return [title, "", *_table(["row ÷ column", *names], rows)]


def _ratios(doc: dict[str, Any]) -> list[str]:
    lines = _matrix(
        doc,
        "cpu",
        f"### CPU ms per request at {results.HEADLINE_CONNECTIONS} connections, as a ratio (row ÷ column; "
        "under 1: the row is cheaper)",
    )
    lines += _matrix(
        doc,
        "rps",
        f"### RPS at {results.HEADLINE_CONNECTIONS} connections, as a ratio (row ÷ column; over 1: the row "
        "carries more)",
    )
    return ["## Ratios (this run only)", "", *lines] if lines else []


def _wrk_table(doc: dict[str, Any]) -> list[str]:
    rows = []
    for name in results.main_targets(doc):
        t = doc["targets"][name]
        w = t.get("wrk")
        if t.get("status") != "ok" or not w:
            continue
        lv = _by_key(t).get(f"{THROUGHPUT}@{w['connections']}conn") or {}
        lat = lv.get("latency_ms") or {}
        if "skipped" in w:
            rows.append([f"**{name}**", "", w["skipped"], "", "", ""])
            continue
        wl = w["latency_ms"]
        rows.append(
            [
                f"**{name}**",
                "–" if not lv or "rps" not in lv else f"{lv['rps']:,.0f} · {_f(lat.get('p50'))} / {_f(lat.get('p99'))}",
                f"{w['rps']:,.0f} · {_f(wl['p50'])} / {_f(wl['p99'])} · {w['errors']:,}",
                _ratio(stats.ratio(w["rps"], lv.get("rps"))),
                "–" if name == "direct" or not lv else _f(_cpu_ms(lv), 3),
                "–" if name == "direct" else _f(w.get("cpu_ms_per_request"), 3),
            ]
        )
    if not rows:
        return []
    conns = doc["settings"].get("wrk_connections", results.HEADLINE_CONNECTIONS)
    head = [
        "target",
        "driver: RPS · p50 / p99 ms",
        "wrk: RPS · p50 / p99 ms · errors",
        "wrk ÷ driver RPS",
        "CPU ms/req (driver)",
        "CPU ms/req (wrk)",
    ]
    return [
        f"## Cross-check with wrk ({conns} connections)",
        "",
        f"`wrk -t1 -c{conns}` on the driver's core, a Lua script sending the same realistic bodies (a unique id "
        "and six words each) and headers; wrk has no warm-up and its latencies include connecting. RPS counts "
        "2xx answers per second in both.",
        "",
        *_table(head, rows),
    ]


def _overload_table(doc: dict[str, Any]) -> list[str]:
    rows = []
    for name in results.main_targets(doc):
        for lv in doc["targets"][name].get("levels", []):
            if lv["scenario"] != OVERLOAD:
                continue
            if "skipped" in lv:
                rows.append([f"**{name}**", lv["skipped"], "", "", "", "", "", ""])
                continue
            fig = results.overload_figures(lv)
            other = f" (+{fig['other_errors']:,} other errors)" if fig["other_errors"] else ""
            rows.append(
                [
                    f"**{name}**",
                    f"{fig['rate']:,} RPS ({lv['value']}% of {fig['capacity_rps']:,.0f})",
                    f"{fig['served']:,} of {fig['requests']:,}",
                    f"{fig['shed']:,} ({fig['shed_with_retry_after']:,} with retry-after)",
                    f"{fig['unanswered']:,}{other}",
                    _f(fig["served_p50_ms"]),
                    f"{_f(fig['answered_p99_ms'])} / {_f(fig['shed_p99_ms'])}",
                    {True: "yes", False: "**no**", None: "n/a"}[results.sheds_fast(fig)],
                ]
            )
    if not rows:
        return []
    head = [
        "target",
        "offered (share of its best closed-loop RPS)",
        "served (2xx)",
        "shed (429/503)",
        "unanswered (timeouts, resets)",
        "served p50 ms",
        "p99 ms: all answers / shed",
        "sheds fast",
    ]
    return [
        "## Past capacity (open loop above the target's own best closed-loop RPS in this run)",
        "",
        "A target past its capacity should answer what it cannot serve at once with 429 or 503 and "
        f"`retry-after`, quickly, instead of queueing for seconds: met when no request went unanswered, every "
        f"shed answer carried `retry-after` and the p99 of all answers stayed within {results.SHED_P99_MS:g} ms.",
        "",
        *_table(head, rows),
    ]


def _cpu_levels_table(doc: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for name in results.main_targets(doc):
        for lv in doc["targets"][name].get("levels", []):
            if lv["scenario"] in (OVERHEAD, THROUGHPUT) and lv["key"] not in keys:
                keys.append(lv["key"])
    keys.sort(key=lambda k: (not k.startswith(OVERHEAD), int("".join(c for c in k.split("@")[1] if c.isdigit()))))
    rows = []
    for name in results.main_targets(doc):
        t = doc["targets"][name]
        if name == "direct" or t.get("status") != "ok":
            continue
        levels = _by_key(t)
        cells = ["–" if k not in levels or "skipped" in levels[k] else _f(_cpu_ms(levels[k]), 3) for k in keys]
        rows.append([f"**{name}**", *cells])
    if not rows:
        return []
    return [
        "## CPU ms per request at every level (the target's process tree; utime + stime ÷ answered requests)",
        "",
        *_table(["target", *[k.replace("overhead@", "").replace("throughput@", "") for k in keys]], rows),
    ]


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
    lines += _headline(doc)
    lines += ["## Targets", "", *_checks_table(doc)]
    lines += _ratios(doc)
    lines += [
        "## Overhead at a fixed rate (ms added over the direct call at the same rate; open loop)",
        "",
        "The direct row shows its absolute latency.",
        "",
        *_overhead_table(doc, rates),
    ]
    lines += ["## Throughput at constant connections (closed loop)", "", *_throughput_table(doc, conns)]
    lines += _wrk_table(doc)
    lines += _overload_table(doc)
    lines += _cpu_levels_table(doc)
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
    if profiles := _profiles(doc):
        lines += ["## Profiles", "", *profiles]
    if charts:
        lines += ["## Charts", ""] + [f"![{name}]({path})" for name, path in charts.items()] + [""]
    return "\n".join(lines)
