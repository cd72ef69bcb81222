"""The Prometheus text exposition (format 0.0.4) of a merged metrics snapshot, and the cache hit
ratios derived from it (also shown by the dashboard)."""

from __future__ import annotations

from gateway.observe.metrics import Labels, Metrics, Snapshot


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Labels, values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_esc(str(v))}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def hit_ratios(snap: Snapshot) -> dict[str, float]:
    """Share of all requests answered by each cache phase, and "all" for any phase."""
    by_phase: dict[str, float] = {}
    total = 0.0
    for labels, v in snap.counters.get("gateway_requests_total", []):
        total += v
        by_phase[labels[3]] = by_phase.get(labels[3], 0.0) + v
    if not total:
        return {}
    out = {p: n / total for p, n in by_phase.items() if p != "miss"}
    out["all"] = sum(n for p, n in by_phase.items() if p != "miss") / total
    return out


def render(reg: Metrics, snap: Snapshot) -> bytes:
    """The Prometheus text format (0.0.4) for a merged snapshot, named and described by `reg`."""
    lines: list[str] = []
    for c in reg.all_counters():
        lines += [f"# HELP {c.name} {c.help}", f"# TYPE {c.name} counter"]
        for labels, v in sorted(snap.counters.get(c.name, [])):
            lines.append(f"{c.name}{_labels(c.labels, labels)} {_num(v)}")
    for g in reg.gauges.values():
        lines += [f"# HELP {g.name} {g.help}", f"# TYPE {g.name} gauge"]
        for labels, v in sorted(snap.gauges.get(g.name, [])):
            lines.append(f"{g.name}{_labels(g.labels, labels)} {_num(v)}")
    lines += ["# HELP gateway_cache_hit_ratio Share of requests answered from the cache, per phase.",
              "# TYPE gateway_cache_hit_ratio gauge"]
    for phase, ratio in sorted(hit_ratios(snap).items()):
        lines.append(f'gateway_cache_hit_ratio{{phase="{_esc(phase)}"}} {_num(ratio)}')
    for h in reg.all_histograms():
        lines += [f"# HELP {h.name} {h.help}", f"# TYPE {h.name} histogram"]
        for labels, counts, total in sorted(snap.histograms.get(h.name, []), key=lambda t: t[0]):
            cum = 0
            for bound, n in zip((*h.bounds, float("inf")), counts, strict=False):
                cum += n
                le = 'le="' + ("+Inf" if bound == float("inf") else repr(bound)) + '"'
                lines.append(f"{h.name}_bucket{_labels(h.labels, labels, le)} {cum}")
            lines.append(f"{h.name}_sum{_labels(h.labels, labels)} {_num(total)}")
            lines.append(f"{h.name}_count{_labels(h.labels, labels)} {cum}")
    lines.append("")
    return "\n".join(lines).encode()
